"""Forward steps for megatron's pipeline schedules: `sft` (plain CE) and `wmss` (WD-JT mixed CE).

Both return the loss summed over the micro-batch's supervised tokens together with their count;
with `calculate_per_token_loss` megatron divides the gradients by the supervised-token count of the
whole global batch (all micro-batches, all data-parallel ranks), i.e. plain CE per supervised token.
"""

from __future__ import annotations

from functools import partial

import torch

from megatron_wmss.checkpoint import unwrap_model
from megatron_wmss.distributed import compute_device

IGNORE_INDEX = -100


def _to_device(batch: dict) -> dict:
    return {k: v.to(compute_device(), non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _reduced(loss_sum, mask, **diagnostics):
    """(loss, num_tokens, logged) in megatron's 3-tuple loss_func convention."""
    num_tokens = mask.sum().to(torch.int)
    logged = {"loss": torch.stack([loss_sum.detach(), mask.sum()])}
    for name, value in diagnostics.items():
        logged[name] = torch.stack([value.detach(), mask.sum()])
    return loss_sum, num_tokens, logged


def _masked_labels(batch) -> torch.Tensor:
    """[s, b] labels with unsupervised positions set to IGNORE_INDEX."""
    return torch.where(batch["loss_mask"] > 0, batch["labels"], IGNORE_INDEX).transpose(0, 1).contiguous()


def sft_forward_step(data_iterator, model):
    """One model; plain CE from its final hidden states with the same fused vocab-parallel kernel as
    WD-JT at lam = 1 (the weak inputs are detached copies and their GEMMs are skipped), so the vocab
    padding is excluded exactly as in WD-JT and lam = 1 WD-JT reproduces SFT."""
    from megatron_wmss.losses import mixed_linear_cross_entropy

    batch = _to_device(next(data_iterator))
    hidden = model(batch["tokens"], batch["position_ids"], attention_mask=None)

    def loss_func(h):
        gpt = unwrap_model(model)
        w = gpt.output_weight()
        loss = mixed_linear_cross_entropy(h, w, h.detach(), w.detach(), _masked_labels(batch), 1.0,
                                          vocab_size=gpt.unpadded_vocab_size)
        return _reduced(loss.sum(), batch["loss_mask"].float())

    return hidden, loss_func


def wmss_forward_step(data_iterator, model, *, lam: float):
    """WD-JT (Algorithm 1 line 18): both branches on the same micro-batch, loss = CE of the mixed logits
    lam*z_strong + (1-lam)*z_weak (Eq. 5-6), computed from the final hidden states by the fused
    vocab-parallel kernel; strong-only and weak-only CE are logged as no-grad diagnostics."""
    from megatron_wmss.losses import mixed_linear_cross_entropy

    batch = _to_device(next(data_iterator))
    output = model(batch["tokens"], batch["position_ids"], attention_mask=None)

    def loss_func(hidden):
        h_strong, h_weak = hidden
        pair = unwrap_model(model)
        mask = batch["loss_mask"].float()
        loss, strong_ce, weak_ce = mixed_linear_cross_entropy(
            h_strong, pair.strong.output_weight(), h_weak, pair.weak.output_weight(), _masked_labels(batch), lam,
            return_diagnostics=True, vocab_size=pair.strong.unpadded_vocab_size)
        mask_sb = mask.transpose(0, 1)
        return _reduced(loss.sum(), mask_sb, strong_ce=(strong_ce * mask_sb).sum(),
                        weak_ce=(weak_ce * mask_sb).sum())

    return output, loss_func


def forward_step_for(objective: str, lam: float = 0.5):
    if objective == "sft":
        return sft_forward_step
    return partial(wmss_forward_step, lam=lam)
