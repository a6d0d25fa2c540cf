"""UNDIAL (Dong et al., 2024, "Self-distillation with adjusted logits"; the paper's baseline, App. E.6):
the trained model is distilled towards a frozen reference copy of its starting model whose logits are
*adjusted*: the target token's logit is lowered by a penalty before the softmax,

    p'_t = softmax(z_ref,t - delta_t e_(y_t)),    loss_t = -sum_v p'_t[v] log softmax(z_t)[v]

(UNDIAL's Eq.: soft labels = softmax(teacher logits - beta * one-hot(target)), trained with the
cross-entropy against them; the open-unlearning implementation's default beta is 1.0).

The WMSS paper (App. E.6) runs it with "logit-smoothing scale sigma = 1.0" and noise normalised by
1/sqrt(L): noise = sigma * eps / sqrt(L), eps ~ N(0, I). Our reading, which the paper does not pin down:
the penalty on the target logit is stochastic, delta_t = undial.strength + undial.noise_scale * eps_t /
sqrt(L), eps_t ~ N(0, 1) per supervised token, both scales 1.0 by default; L is the sample's length (the
positions up to its last supervised one). noise_scale = 0 is UNDIAL exactly as its paper defines it.

The logits of this rank's vocab shard are materialized (`[s, b, V/tp]` for both models, as megatron's
own output layer does); the softmax normalisers are merged over the TP group (max and sum all-reduces),
the student's via megatron's `reduce_from_tensor_model_parallel_region` so that autograd gives each
rank the gradient of its shard. TP padding rows are in no softmax. eps is drawn per sample from a
generator keyed on (training.seed, step, sample id): the same at every layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_wmss.distributed import batch_to_device
from megatron_wmss.models.packed_attention import attention_inputs
from megatron_wmss.errors import ConfigError
from megatron_wmss.losses import IGNORE_INDEX
from megatron_wmss.losses._common import EMPTY_MAX, vocab_shard
from megatron_wmss.training.train_module import TrainModule, build_pair, masked_labels, reduced, sample_generator


@dataclass
class UNDIALConfig:
    """UNDIAL's settings (recipe section `undial`)."""

    strength: float = 1.0  # mean penalty on the reference's target logit (UNDIAL's beta; App. E.6 sigma)
    noise_scale: float = 1.0  # sigma of the penalty's noise sigma * eps / sqrt(L) (App. E.6); 0 = none

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not self.strength >= 0:
            raise ConfigError(f"undial.strength: must be >= 0, got {self.strength}")
        if not self.noise_scale >= 0:
            raise ConfigError(f"undial.noise_scale: must be >= 0, got {self.noise_scale}")


def undial_penalty(sample_ids, loss_mask: torch.Tensor, config: UNDIALConfig, *, seed: int, step: int) -> torch.Tensor:
    """delta `[s, b]` float64 for a micro-batch with `loss_mask` `[b, s]`: strength + noise_scale * eps /
    sqrt(L_b), eps from sample b's generator, L_b = 1 + the sample's last supervised position."""
    batch, length = loss_mask.shape
    delta = torch.full((length, batch), config.strength, dtype=torch.float64)
    if config.noise_scale:
        for j, sid in enumerate(sample_ids):
            supervised = torch.nonzero(loss_mask[j] > 0)
            span = int(supervised[-1]) + 1 if len(supervised) else length
            eps = torch.randn(length, generator=sample_generator(seed, step, sid, "undial"), dtype=torch.float64)
            delta[:, j] += config.noise_scale * eps / math.sqrt(span)
    return delta


def _shard_logits(h: torch.Tensor, w: torch.Tensor, real: int) -> torch.Tensor:
    """h @ w[:real]^T in float32 at least (float64 stays), `[..., real]`."""
    z = h @ w[:real].t()
    return z if z.dtype == torch.float64 else z.float()


def undial_cross_entropy(h: torch.Tensor, w: torch.Tensor, h_ref: torch.Tensor, w_ref: torch.Tensor,
                         labels: torch.Tensor, penalty: torch.Tensor, *, vocab_size: int | None = None,
                         tp_group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token UNDIAL loss `-sum_v p'[v] log softmax(z)[v]` and the plain CE `-log softmax(z)[y]`
    (no grad), both `[s, b]` (0 at ignored labels), from hidden states `[s, b, h]` and this rank's output
    weight shards of the trained (`h`, `w`) and reference (`h_ref`, `w_ref`, no grad) models;
    p' = softmax(z_ref - penalty * onehot(labels)) over the unpadded vocabulary."""
    from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region, reduce_from_tensor_model_parallel_region

    shard = vocab_shard(tp_group, w.shape[0], vocab_size)
    real = shard.real
    valid = labels != IGNORE_INDEX
    local = valid & (labels >= shard.start) & (labels < shard.start + real)
    index = torch.where(local, labels - shard.start, torch.zeros_like(labels)).unsqueeze(-1)
    reduces = shard.reduces
    if reduces:
        h = copy_to_tensor_model_parallel_region(h)  # backward: sum the vocab shards' partial dh
    z = _shard_logits(h, w, real)
    with torch.no_grad():
        zr = _shard_logits(h_ref, w_ref, real).double()
        if real:
            zr.scatter_add_(-1, index, -(penalty.to(zr) * local).unsqueeze(-1))
        tops = torch.stack([zr.amax(-1) if real else torch.full(labels.shape, EMPTY_MAX, dtype=torch.float64,
                                                                              device=zr.device),
                            z.detach().double().amax(-1) if real else torch.full(labels.shape, EMPTY_MAX,
                                                                                 dtype=torch.float64, device=zr.device)])
        shard.all_reduce_(tops, dist.ReduceOp.MAX)
        e = torch.exp(zr - tops[0].unsqueeze(-1))
        norm = shard.all_reduce_(e.sum(-1))
        soft = (e / norm.unsqueeze(-1)).to(z.dtype)  # p' on this shard
    top = tops[1].to(z.dtype).unsqueeze(-1)
    sum_exp = torch.exp(z - top).sum(-1)
    weighted = (soft * z).sum(-1)
    target = torch.where(local, z.gather(-1, index).squeeze(-1), torch.zeros_like(weighted))
    if reduces:
        sum_exp = reduce_from_tensor_model_parallel_region(sum_exp, group=shard.group)
        weighted = reduce_from_tensor_model_parallel_region(weighted, group=shard.group)
        target = reduce_from_tensor_model_parallel_region(target, group=shard.group)
    lse = top.squeeze(-1) + torch.log(sum_exp)
    loss = torch.where(valid, lse - weighted, torch.zeros_like(lse))
    ce = torch.where(valid, lse - target, torch.zeros_like(lse)).detach()
    return loss, ce


class UNDIAL(TrainModule):
    init_branches = ("model",)

    def __init__(self, config: UNDIALConfig, seed: int):
        self.config, self.seed, self.step = config, seed, 0

    @classmethod
    def from_recipe(cls, cfg) -> "UNDIAL":
        return cls(cfg.undial, cfg.training.seed)

    def begin_step(self, step: int) -> None:
        self.step = step

    def build_model(self, tcfg, arch, init: dict):
        """The trained model and its frozen reference, both from init["model"], as a WeakStrongPair
        (strong = trained, weak = reference, frozen): the pair runs both through the pipeline stages."""
        pair, finalize = build_pair(tcfg, arch, "undial", init.get("model"), freeze_weak=True)
        pair.weak.load_state_dict(pair.strong.state_dict())
        return pair, finalize

    def forward_step(self, data_iterator, model):
        """Both models on the micro-batch; the loss is UNDIAL's CE against the adjusted reference
        distribution; the trained model's plain CE is logged as `strong_ce`."""
        from megatron.core.utils import unwrap_model

        batch = batch_to_device(next(data_iterator))
        output = model(batch["tokens"], batch["position_ids"], **attention_inputs(batch, model))

        def loss_func(hidden):
            h, h_ref = hidden
            pair = unwrap_model(model)
            penalty = undial_penalty(batch["sample_ids"], batch["loss_mask"].cpu(), self.config, seed=self.seed,
                                     step=self.step).to(h.device)
            loss, ce = undial_cross_entropy(h, pair.strong.output_weight(), h_ref, pair.weak.output_weight(),
                                            masked_labels(batch), penalty, vocab_size=pair.strong.unpadded_vocab_size)
            mask = batch["loss_mask"].float().transpose(0, 1)
            return reduced((loss * mask).sum(), mask, strong_ce=(ce * mask).sum())

        return output, loss_func

    def branches(self, module) -> dict:
        return {"model": module.strong}
