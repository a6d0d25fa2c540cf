"""The final hidden states the fused losses need, under megatron's sequence parallelism.

With `sequence_parallel` (TP > 1) megatron keeps the residual stream sharded along the sequence: the
embedding scatters it, each ColumnParallelLinear all-gathers its input and each RowParallelLinear
reduce-scatters its output, so the final norm's output, which `HiddenStateGPTModel(return_hidden=True)`
hands to the loss, is this rank's `[s/tp, b, h]` slice. Megatron's own output layer (a
ColumnParallelLinear) would gather it; the fused losses take the place of that layer and need every
token on every TP rank (each rank holds one vocab slice of the output weight), so the loss functions
gather first, with the op megatron's output layer uses.
"""

from __future__ import annotations

import torch


def gather_hidden(hidden: torch.Tensor, config) -> tuple[torch.Tensor, bool]:
    """(`[s, b, h]` hidden states on every TP rank, `reduce_hidden_grad` for the fused loss) from a
    model's final hidden states and its TransformerConfig.

    Sequence parallel: `gather_from_sequence_parallel_region(h, tensor_parallel_output_grad=True)`,
    whose backward reduce-scatters the ranks' partial `dh` (each the contribution of its vocab slice),
    so the loss must hand back those partial sums unreduced: `reduce_hidden_grad=False`. Otherwise the
    hidden states are returned as they are and the loss all-reduces `dh` itself (`True`)."""
    if not config.sequence_parallel:
        return hidden, True
    from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

    return gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True), False
