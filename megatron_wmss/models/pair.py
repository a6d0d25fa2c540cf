"""WeakStrongPair: the weak and strong GPTModels of WD-JT as one pipeline.

Both models have identical layouts and are split identically across pipeline stages. Each stage runs
its strong and weak layers on the same micro-batch and hands `cat([h_strong, h_weak], -1)` of shape
[s, b, 2h] to the next stage; the last stage returns both final hidden states so the loss (paper
Eq. 5-6, fused with the output projections) can be computed there. Both branches live in one megatron
DDP wrapper and one optimizer; with `freeze_weak` the weak branch runs without autograd and is not
handed to the optimizer.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from megatron.core.utils import unwrap_model


class WeakStrongPair(torch.nn.Module):
    """Two GPTModels (built by models.build with the same config) trained jointly."""

    def __init__(self, strong, weak, *, freeze_weak: bool = False):
        super().__init__()
        if strong.pre_process != weak.pre_process or strong.post_process != weak.post_process:
            raise ValueError("strong and weak models must cover the same pipeline stage")
        self.strong = strong
        self.weak = weak
        self.freeze_weak = freeze_weak
        self.model_type = strong.model_type  # read by megatron's schedules
        self.pre_process = strong.pre_process
        self.post_process = strong.post_process
        # megatron's finalize_model_grads all-reduces one tied embedding; finalize_pair_grads does both.
        self.share_embeddings_and_output_weights = False
        # The schedule sizes p2p buffers from `config.hidden_size`: the hand-off carries 2h channels.
        self.config = dataclasses.replace(strong.config, hidden_size=2 * strong.config.hidden_size) \
            if dataclasses.is_dataclass(strong.config) else copy.copy(strong.config)
        for branch in (strong, weak):
            branch.return_hidden = True
        if freeze_weak:
            for param in weak.parameters():
                param.requires_grad_(False)

    def set_input_tensor(self, input_tensor) -> None:
        """Split the received [s, b, 2h] hand-off into the strong and weak halves."""
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0]
        if input_tensor is None:
            self.strong.set_input_tensor(None)
            self.weak.set_input_tensor(None)
            return
        half = input_tensor.shape[-1] // 2
        self.strong.set_input_tensor(input_tensor[..., :half])
        self.weak.set_input_tensor(input_tensor[..., half:])

    def forward(self, input_ids, position_ids, attention_mask=None, packed_seq_params=None):
        """Non-last stages: [s, b, 2h]. Last stage: (h_strong, h_weak), final hidden states [s, b, h]."""
        h_strong = self.strong(input_ids, position_ids, attention_mask, packed_seq_params=packed_seq_params)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_weak):
            h_weak = self.weak(input_ids, position_ids, attention_mask, packed_seq_params=packed_seq_params)
        if not self.post_process:
            return torch.cat([h_strong, h_weak], dim=-1)
        return h_strong, h_weak

    def branches(self):
        return {"strong": self.strong, "weak": self.weak}

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata=None):
        """Both branches' megatron sharded state dicts, keys prefixed `strong.` and `weak.`."""
        out = {}
        for name, branch in self.branches().items():
            out.update(branch.sharded_state_dict(prefix=f"{prefix}{name}.", sharded_offsets=sharded_offsets,
                                                 metadata=metadata))
        return out


def finalize_pair_grads(model, num_tokens=None, pg_collection=None, force_all_reduce=False):
    """megatron's finalize_model_grads, plus the first/last-stage all-reduce of the tied
    embedding/output gradient for BOTH branches (megatron's own pass finds only one module)."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.distributed import finalize_model_grads

    finalize_model_grads(model, num_tokens, pg_collection=pg_collection, force_all_reduce=force_all_reduce)
    group = parallel_state.get_embedding_group(check_initialized=False)
    if group is None or dist.get_world_size(group) <= 1 or dist.get_rank() not in dist.get_process_group_ranks(group):
        return
    pair = unwrap_model(model[0])
    for branch in pair.branches().values():
        if not branch.share_embeddings_and_output_weights:
            continue
        weight = branch.shared_embedding_or_output_weight()
        grad = getattr(weight, "main_grad", None)
        if weight.requires_grad and grad is not None:
            dist.all_reduce(grad, group=group)

