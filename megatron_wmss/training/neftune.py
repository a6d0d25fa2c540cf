"""NEFTune (Jain et al., ICLR 2024; the paper's baseline, App. E.6): SFT with uniform noise added to the
input embeddings during training,

    emb + (alpha / sqrt(L * d)) * U(-1, 1)^(L x d),

L the sequence length of the row, d the hidden size, alpha = neftune.alpha (5, the paper's choice).
As in NEFTune's reference implementation in HF transformers (`neftune_noise_alpha`), L is the length of
the (padded) row the embedding layer sees, and no noise is added outside training (`module.training`
false: evaluation, diagnostics, exported models). The loss is SFT's (sft.py).

Each sample's noise is drawn from its own generator keyed on (training.seed, step, sample id), so it is
the same at every TP/PP/DP layout and after a resume (a sample drawn twice in one step gets the same noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from megatron_wmss.errors import ConfigError
from megatron_wmss.training.sft import SFT
from megatron_wmss.training.train_module import sample_generator


@dataclass
class NEFTuneConfig:
    """NEFTune's settings (recipe section `neftune`)."""

    alpha: float = 5.0  # noise magnitude alpha (NEFTune's alpha; the WMSS paper uses 5, App. E.6)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"neftune.alpha: must be >= 0, got {self.alpha}")


def neftune_noise(sample_ids, shape: tuple[int, int, int], alpha: float, *, seed: int, step: int) -> torch.Tensor:
    """The noise of one micro-batch, `[L, b, d]` float32 (megatron's sequence-first layout): column j
    is U(-1, 1) from sample j's generator times alpha / sqrt(L * d)."""
    length, batch, dim = shape
    if len(sample_ids) != batch:
        raise ValueError(f"{len(sample_ids)} sample ids for a micro-batch of {batch}")
    scale = alpha / math.sqrt(length * dim)
    draws = [torch.rand(length, dim, generator=sample_generator(seed, step, sid, "neftune")) for sid in sample_ids]
    return (torch.stack(draws, dim=1) * 2.0 - 1.0) * scale


class NEFTune(SFT):
    def __init__(self, config: NEFTuneConfig, seed: int):
        self.config, self.seed = config, seed
        self.step, self._sample_ids = 0, None
        self._sequence_parallel = False  # the embedding's output is this TP rank's sequence slice

    @classmethod
    def from_recipe(cls, cfg) -> "NEFTune":
        return cls(cfg.neftune, cfg.training.seed)

    def begin_step(self, step: int) -> None:
        self.step = step

    def build_model(self, tcfg, arch, init: dict):
        model, finalize = super().build_model(tcfg, arch, init)
        self._sequence_parallel = model.config.sequence_parallel
        if model.pre_process:  # the first pipeline stage owns the embedding
            model.embedding.register_forward_hook(self._add_noise)
        return model, finalize

    def _add_noise(self, module, inputs, output):
        """Forward hook of the embedding layer: its output plus the noise, in training only. The output is
        [L, b, d], or under sequence parallelism this TP rank's [L/tp, b, d] slice of it (the embedding
        scatters along the sequence): the noise of the whole row is drawn (L is the row's length) and
        the slice that belongs to this rank added."""
        if not module.training or self.config.alpha == 0:
            return output
        length, batch, dim = output.shape
        parts, part = 1, 0
        if self._sequence_parallel:
            from megatron.core import parallel_state as ps

            parts, part = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
        noise = neftune_noise(self._sample_ids, (length * parts, batch, dim), self.config.alpha, seed=self.seed,
                              step=self.step)[part * length:(part + 1) * length]
        return output + noise.to(device=output.device, dtype=output.dtype)

    def forward_step(self, data_iterator, model):
        """SFT's forward step; the micro-batch's sample ids key the embedding noise."""
        batch = next(data_iterator)
        self._sample_ids = batch["sample_ids"]
        return super().forward_step(iter([batch]), model)
