"""WD-JT (Algorithm 1 line 18): the weak (M_(t-1)) and strong (M_t) models trained jointly on the
cross-entropy of their mixed logits (paper Eq. 5-6)."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_wmss.distributed import batch_to_device
from megatron_wmss.models.packed_attention import attention_inputs
from megatron_wmss.errors import ConfigError
from megatron_wmss.training.train_module import TrainModule, build_pair, masked_labels, reduced


@dataclass
class WDJTConfig:
    """WD-JT's settings (recipe section `wmss`)."""

    lam: float = 0.5  # Eq. 5 mixing weight of the strong logits
    freeze_weak: bool = False  # paper Algorithm 1 trains both branches

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"wmss.lam: lambda must be in [0, 1], got {self.lam}")


class WDJT(TrainModule):
    init_branches = ("strong", "weak")

    def __init__(self, config: WDJTConfig):
        self.config = config

    @classmethod
    def from_recipe(cls, cfg) -> "WDJT":
        return cls(cfg.wmss)  # the recipe's `wmss` section is a WDJTConfig (config.WmssConfig)

    def build_model(self, tcfg, arch, init: dict):
        return build_pair(tcfg, arch, "wmss", init.get("strong"), init.get("weak"), freeze_weak=self.config.freeze_weak)

    def forward_step(self, data_iterator, model):
        """Both branches on the same micro-batch; the loss is the CE of lam*z_strong + (1-lam)*z_weak
        (Eq. 5-6) from the final hidden states by the fused vocab-parallel kernel; strong-only and
        weak-only CE are logged as no-grad diagnostics."""
        from megatron.core.utils import unwrap_model

        from megatron_wmss.losses import mixed_linear_cross_entropy

        batch = batch_to_device(next(data_iterator))
        output = model(batch["tokens"], batch["position_ids"], **attention_inputs(batch, model))

        def loss_func(hidden):
            h_strong, h_weak = hidden
            pair = unwrap_model(model)
            loss, strong_ce, weak_ce = mixed_linear_cross_entropy(
                h_strong, pair.strong.output_weight(), h_weak, pair.weak.output_weight(), masked_labels(batch),
                self.config.lam, return_diagnostics=True, vocab_size=pair.strong.unpadded_vocab_size)
            mask = batch["loss_mask"].float().transpose(0, 1)
            return reduced(loss.sum(), mask, strong_ce=(strong_ce * mask).sum(), weak_ce=(weak_ce * mask).sum())

        return output, loss_func

    def branches(self, module) -> dict:
        return module.branches()
