"""The single-process megatron model both conversion directions work on: TP=1/PP=1, local spec, CPU
initialization without random init (every weight is overwritten)."""

from __future__ import annotations

import torch

from megatron_wmss.convert.mappings import ConversionError

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype, what: str) -> str:
    if dtype not in DTYPE_NAMES:
        raise ConversionError(f"{what} has dtype {dtype}; supported: fp32, bf16, fp16")
    return DTYPE_NAMES[dtype]


def ensure_single_process() -> None:
    """Initialize torch.distributed + megatron parallel state as one process (TP=1, PP=1)."""
    import torch.distributed as dist

    from megatron_wmss import distributed

    if dist.is_initialized() and dist.get_world_size() != 1:
        raise ConversionError(f"conversion runs in one process, not in a job of world size "
                              f"{dist.get_world_size()} (run it without torchrun)")
    distributed.initialize(tp=1, pp=1)


def build_model(hf: dict, dtype: str, make_vocab_size_divisible_by: int):
    """(GPTModel, ArchInfo) at TP=1/PP=1 for HF config `hf`, parameters in `dtype` (fp32/bf16/fp16)."""
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    tcfg, arch = transformer_config_from_hf(
        hf, tp=1, pp=1, params_dtype=dtype, transformer_impl="local",
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        use_cpu_initialization=True, perform_initialization=False)
    return build_gpt_model(tcfg, arch, pre_process=True, post_process=True), arch
