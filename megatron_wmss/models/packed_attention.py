"""Attention kept inside each sample of a packed row (data/packing.py): what the model call needs.

`attention_inputs(batch, model)` gives the keyword arguments of the model call of every forward step
that runs on packed data (SFT, WD-JT, NEFTune, UNDIAL, WD-DS scoring):
- rows of one sample each (unpacked data, or no `segment_ids`): `attention_mask=None`, megatron's own
  causal mask;
- local spec (CPU): a block-diagonal causal boolean mask `[b, 1, s, s]` (True = masked, megatron's
  convention), which megatron-core's unfused softmax (FusedScaleMaskSoftmax.forward_torch_softmax)
  applies in place of its default causal mask;
- Transformer Engine: `packed_seq_params`, THD format with cu_seqlens at the segment boundaries (one
  row per micro-batch; the padding tail is one more sequence). This path is not run by the tests (no
  GPU); only its cu_seqlens are unit-tested.

Positions: megatron's GPTModel rotates q and k by the position in the row (it builds RoPE from the
sequence length, not from position_ids). RoPE scores depend only on the distance between query and
key, which is the same counted from the row's start as from the sample's, and the mask allows only
pairs inside one sample; so a packed sample's attention equals its unpacked attention up to float
rounding (tests/test_packing_equivalence.py checks losses, gradients and WD-DS scores).

Refused with a ConfigError naming data.pack: sliding-window layers (Gemma-3; megatron's unfused softmax
replaces any given mask by its window mask), and the local spec with megatron's fused softmax kernel
(GPU bf16), whose causal variant ignores a given mask.
"""

from __future__ import annotations

import torch
from megatron.core.utils import unwrap_model

from megatron_wmss.errors import ConfigError


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """`[b, 1, s, s]` bool, True where query t may NOT see key u: u > t or another segment (the
    padding tail, segment 0, is a block of its own)."""
    same = segment_ids.unsqueeze(-1) == segment_ids.unsqueeze(-2)
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    return ~(same & causal).unsqueeze(1)


def packed_seq_params(segment_ids: torch.Tensor):
    """megatron PackedSeqParams (THD) of one packed row `[1, s]`: cu_seqlens at each change of segment."""
    from megatron.core.packed_seq_params import PackedSeqParams

    if segment_ids.shape[0] != 1:
        raise ConfigError("training.micro_batch_size: data.pack with Transformer Engine (THD) takes one packed "
                          f"row per micro-batch, got {segment_ids.shape[0]}; set training.micro_batch_size=1")
    row = segment_ids[0]
    starts = torch.nonzero(row[1:] != row[:-1]).flatten() + 1
    ends = torch.tensor([row.numel()], device=row.device)
    cu = torch.cat([torch.zeros(1, dtype=starts.dtype, device=row.device), starts, ends]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, cu_seqlens_q_padded=cu,
                           cu_seqlens_kv_padded=cu, max_seqlen_q=longest, max_seqlen_kv=longest)


def _gpt(model):
    """The (first) GPTModel inside a forward step's model (DDP-wrapped GPTModel or WeakStrongPair)."""
    module = unwrap_model(model)
    return getattr(module, "strong", module)


def attention_inputs(batch: dict, model) -> dict:
    """Keyword arguments of `model(tokens, position_ids, **...)` for `batch` (module docstring)."""
    segments = batch.get("segment_ids")
    if segments is None or int(segments.max()) <= 1:
        return {"attention_mask": None}
    gpt = _gpt(model)
    config = gpt.config
    if config.window_size is not None:
        raise ConfigError("data.pack: packed rows are not supported for models with sliding-window attention "
                          "(Gemma-3); use data.pack=false")
    if gpt.transformer_impl == "transformer_engine":
        return {"attention_mask": None, "packed_seq_params": packed_seq_params(segments)}
    if config.masked_softmax_fusion and (config.bf16 or config.fp16):
        raise ConfigError("data.pack: the local attention's fused softmax kernel ignores the packing mask; "
                          "use model.transformer_impl=transformer_engine (or auto) on GPU, or data.pack=false")
    return {"attention_mask": block_causal_mask(segments)}
