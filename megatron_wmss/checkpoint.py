"""Model weights in megatron dist-checkpoint format: saved at one TP/PP layout, loadable at any other.

megatron's `dist_checkpointing` does the resharding (including the gated-MLP and QKV layouts), so
weights move between layouts without our own slicing code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def _unwrap(model):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def save_model(model, directory: str | Path) -> None:
    """Save this rank's shard of `model`'s weights (collective over all ranks)."""
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    if not dist.is_initialized() or dist.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    if dist.is_initialized():
        dist.barrier()
    dist_checkpointing.save(_unwrap(model).sharded_state_dict(), str(directory))


def load_model(model, directory: str | Path) -> None:
    """Load weights saved by `save_model` at any TP/PP layout into this rank's shard of `model`."""
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    inner = _unwrap(model)
    state = dist_checkpointing.load(inner.sharded_state_dict(), str(directory))
    inner.load_state_dict(state, strict=False)


@torch.no_grad()
def grads_to_params(model) -> None:
    """Replace each parameter's value by its gradient (or zero); lets tests save gradients with
    `save_model` and compare them across layouts."""
    for param in _unwrap(model).parameters():
        grad = getattr(param, "main_grad", None)
        if grad is None:
            grad = param.grad
        param.copy_(grad if grad is not None else torch.zeros_like(param))
