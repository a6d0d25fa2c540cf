"""SFT: one model, plain cross-entropy of its next-token predictions (Phase 1 of Algorithm 1 and the
SFT baseline)."""

from __future__ import annotations

from megatron.core.utils import unwrap_model

from megatron_wmss.distributed import batch_to_device
from megatron_wmss.models.packed_attention import attention_inputs
from megatron_wmss.training.train_module import TrainModule, masked_labels, reduced


class SFT(TrainModule):
    init_branches = ("model",)

    @classmethod
    def from_recipe(cls, cfg) -> "SFT":
        return cls()

    def build_model(self, tcfg, arch, init: dict):
        from megatron.core.distributed import finalize_model_grads

        from megatron_wmss.checkpoint import load_model
        from megatron_wmss.models.build import build_gpt_model

        model = build_gpt_model(tcfg, arch)
        model.return_hidden = True  # the loss owns the output projection (forward_step)
        if init.get("model"):
            load_model(model, init["model"])
        return model, finalize_model_grads

    def forward_step(self, data_iterator, model):
        """CE from the final hidden states with the fused vocab-parallel kernel (`linear_cross_entropy`:
        the vocab padding is left out of the softmax, as in WD-JT, so WD-JT at lam = 1 is SFT)."""
        from megatron_wmss.losses import linear_cross_entropy

        batch = batch_to_device(next(data_iterator))
        hidden = model(batch["tokens"], batch["position_ids"], **attention_inputs(batch, model))

        def loss_func(h):
            gpt = unwrap_model(model)
            loss = linear_cross_entropy(h, gpt.output_weight(), masked_labels(batch), vocab_size=gpt.unpadded_vocab_size)
            return reduced(loss.sum(), batch["loss_mask"].float())

        return hidden, loss_func

    def branches(self, module) -> dict:
        return {"model": module}
