"""What the preference objectives (dpo.py, orpo.py) share: their settings (recipe section `preference`,
`PairObjective`), pair micro-batches and the per-pair loss convention.

A pair micro-batch holds b pairs as `[b, 2, S]` tensors (index 0 = chosen, 1 = rejected; data/pairs.py);
the model runs on them as one `[2b, S]` batch with rows (chosen_0, rejected_0, chosen_1, ...). Forward
steps return the loss summed over the micro-batch's pairs with their count, so megatron divides the
gradients by the number of pairs in the global batch (the loss is a mean over pairs); every logged
quantity is a (sum, pairs) pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_wmss.errors import ConfigError
from megatron_wmss.training.train_module import masked_labels


@dataclass
class PreferenceConfig:
    """Section `preference`: DPO's beta and label smoothing, ORPO's lambda."""

    beta: float = 0.1  # DPO: scale of the implicit reward (log-ratio to the reference)
    label_smoothing: float = 0.0  # DPO: conservative-DPO probability that a preference label is flipped
    orpo_lambda: float = 0.1  # ORPO: weight of the odds-ratio term next to the chosen SFT loss

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"preference.beta: must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"preference.label_smoothing: must be in [0, 0.5), got {self.label_smoothing}")
        if not self.orpo_lambda >= 0:
            raise ConfigError(f"preference.orpo_lambda: must be >= 0, got {self.orpo_lambda}")


class PairObjective:
    """Mixin of the preference train modules: pair items (two sequences each), losses counted in pairs,
    settings from the recipe's `preference` section."""

    sequences_per_sample = 2
    count_name = "pairs"

    def __init__(self, config: PreferenceConfig):
        self.config = config

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg.preference)


def flatten_pairs(batch: dict) -> dict:
    """A pair micro-batch (`[b, 2, S]` tensors) as a batch of 2b sequences `[2b, S]`, chosen and
    rejected of each pair adjacent; other values (sample ids) are kept."""
    out = dict(batch)
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        value = batch[key]
        if value.dim() != 3 or value.shape[1] != 2:
            raise ValueError(f"a preference objective needs pair batches ([b, 2, S]), got {key} of shape "
                             f"{tuple(value.shape)}: preprocess the data with --input-format pairs")
        out[key] = value.reshape(-1, value.shape[-1])
    return out


def pair_log_probs(hidden: torch.Tensor, gpt, batch: dict):
    """(chosen, rejected) summed log-probs `[b]` over the supervised tokens of each sequence and the
    (chosen, rejected) supervised-token counts, from final hidden states `[S, 2b, h]` of `gpt`."""
    from megatron_wmss.losses import gather_hidden, sequence_log_probs

    hidden, reduce_dh = gather_hidden(hidden, gpt.config)
    logps = sequence_log_probs(hidden, gpt.output_weight(), masked_labels(batch), vocab_size=gpt.unpadded_vocab_size,
                               reduce_hidden_grad=reduce_dh)
    counts = batch["loss_mask"].sum(dim=-1).to(logps.dtype)
    if (counts == 0).any():
        raise ValueError(f"a pair sequence has no supervised token (samples {batch.get('sample_ids')}); "
                         "every chosen and rejected answer needs at least one")
    return logps[0::2], logps[1::2], counts[0::2], counts[1::2]


def pair_reduced(loss: torch.Tensor, **logged):
    """(loss sum, pairs, logged) in megatron's 3-tuple loss_func convention from the per-pair loss `[b]`
    and per-pair logged quantities `[b]`; the loop turns each (sum, pairs) into a mean over pairs."""
    pairs = torch.tensor(float(loss.numel()), device=loss.device)
    out = {"loss": torch.stack([loss.detach().sum().float(), pairs])}
    for name, value in logged.items():
        out[name] = torch.stack([value.detach().sum().float(), pairs])
    return loss.sum(), pairs.to(torch.int), out
