"""Export each trained branch as a standalone model checkpoint (the conversion tool turns it into HF)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch.distributed as dist

from megatron_wmss.checkpoint import save_model, write_model_metadata


def export_branches(branches: dict, out_root: str | Path, hf_config: dict, tokenizer_dir: str | Path | None) -> dict:
    """Write `<out_root>/<name>` for each branch (name -> module, e.g. a train module's `branches`: strong
    and weak for WD-JT, model for SFT), each a megatron dist checkpoint plus hf_config.json and tokenizer
    files; atomic per branch (tmp + rename). Returns name -> directory."""
    out_root = Path(out_root)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    written = {}
    for name, module in branches.items():
        final, tmp = out_root / name, out_root / f"{name}.tmp"
        if rank0:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
        save_model(module, tmp)
        if rank0:
            write_model_metadata(tmp, hf_config, tokenizer_dir)
            os.replace(tmp, final)
        if dist.is_initialized():
            dist.barrier()
        written[name] = final
    return written
