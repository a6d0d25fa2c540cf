"""Megatron dist checkpoint (a model, or one branch of a pair checkpoint) at any TP/PP -> HF directory
that `transformers` loads: config.json, safetensors (sharded above a size), tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megatron_wmss.convert import runtime
from megatron_wmss.convert.hf_io import (DEFAULT_MAX_SHARD_BYTES, atomic_output_dir, copy_tokenizer_files,
                                         write_safetensors)
from megatron_wmss.convert.mappings import (ConversionError, build_maps, check_convertible, dims_from,
                                            expected_hf_shapes, to_hf)

EMBEDDING_KEY = "embedding.word_embeddings.weight"
BRANCHES = ("strong", "weak")


def resolve_metadata(load_dir: Path, hf_config: str | Path | None) -> tuple[dict, Path | None]:
    """(HF config, tokenizer directory) from `--hf-config` (a config.json or HF directory) or from the
    checkpoint's own metadata."""
    from megatron_wmss.checkpoint import read_model_metadata
    from megatron_wmss.models.build import load_hf_config

    if hf_config is not None:
        source = Path(hf_config)
        return load_hf_config(source), source if source.is_dir() else source.parent
    try:
        meta = read_model_metadata(load_dir)
    except FileNotFoundError as err:
        raise ConversionError(f"{err}; pass --hf-config with the HF model directory or config.json") from err
    return meta["hf_config"], meta["tokenizer_dir"]


def stored_embedding(load_dir: Path, prefix: str):
    """The checkpoint's (global shape, dtype) of the embedding under `prefix`; the error lists the
    prefixes the checkpoint does have."""
    from megatron.core import dist_checkpointing

    try:
        tensors = dist_checkpointing.load_tensors_metadata(str(load_dir))
    except Exception as err:  # not a dist checkpoint / unreadable metadata
        raise ConversionError(f"{load_dir} is not a readable megatron dist checkpoint: {err}") from err
    key = prefix + EMBEDDING_KEY
    if key not in tensors:
        prefixes = sorted(k[:-len(EMBEDDING_KEY)] for k in tensors if k.endswith(EMBEDDING_KEY))
        shown = ", ".join(repr(p) for p in prefixes) or "none"
        hint = (" (a pair checkpoint: pass --branch strong or --branch weak)"
                if not prefix and any(p.rstrip(".") in BRANCHES for p in prefixes) else "")
        raise ConversionError(f"tensor {key} not in checkpoint {load_dir}; model prefixes found: {shown}{hint}")
    return tuple(tensors[key].global_shape), tensors[key].dtype


def hf_tensors(model, hf: dict, padded_vocab: int, dtype: torch.dtype):
    """Yield (HF name, tensor) from the TP=1/PP=1 megatron `model`, vocab padding removed."""
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    dims = dims_from(hf, padded_vocab)
    expected = expected_hf_shapes(hf)
    for tmap in build_maps(hf):
        if tmap.megatron not in state:
            raise ConversionError(f"megatron tensor {tmap.megatron} is missing from the loaded model")
        for name, tensor in zip(tmap.hf, to_hf(tmap, state[tmap.megatron], dims)):
            if tuple(tensor.shape) != expected[name]:
                raise ConversionError(f"{name} from {tmap.megatron} has shape {list(tensor.shape)}, "
                                      f"expected {list(expected[name])}")
            yield name, tensor.detach().to(device="cpu", dtype=dtype)


def hf_config_for_export(hf: dict, dtype: torch.dtype) -> dict:
    """The HF config with its dtype field(s) set to what was written."""
    out = dict(hf)
    name = str(dtype).removeprefix("torch.")
    keys = [k for k in ("dtype", "torch_dtype") if k in out] or ["torch_dtype"]
    for key in keys:
        out[key] = name
    return out


def convert_megatron_to_hf(load_dir: str | Path, out_dir: str | Path, *, branch: str | None = None,
                           dtype: str = "auto", hf_config: str | Path | None = None,
                           make_vocab_size_divisible_by: int = 128, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                           overwrite: bool = False) -> Path:
    """Export a megatron checkpoint (saved at any TP/PP) to a HF directory `out_dir` (atomically).
    `branch` picks `strong.`/`weak.` of a pair checkpoint; `dtype` 'auto' keeps the stored dtype."""
    from megatron_wmss.checkpoint import load_model

    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise ConversionError(f"checkpoint directory not found: {load_dir}")
    if branch is not None and branch not in BRANCHES:
        raise ConversionError(f"--branch {branch} is not one of {', '.join(BRANCHES)}")
    if dtype != "auto" and dtype not in runtime.DTYPES:
        raise ConversionError(f"--dtype {dtype} is not one of auto, {', '.join(runtime.DTYPES)}")
    hf, tokenizer_dir = resolve_metadata(load_dir, hf_config)
    check_convertible(hf)
    prefix = f"{branch}." if branch else ""
    runtime.ensure_single_process()
    shape, stored = stored_embedding(load_dir, prefix)
    if shape[0] < hf["vocab_size"] or shape[1] != hf["hidden_size"]:
        raise ConversionError(f"checkpoint tensor {prefix}{EMBEDDING_KEY} has shape {list(shape)}, which does not "
                              f"fit vocab_size={hf['vocab_size']}, hidden_size={hf['hidden_size']} of the HF config")
    model, arch = runtime.build_model(hf, runtime.dtype_name(stored, prefix + EMBEDDING_KEY),
                                      make_vocab_size_divisible_by)
    try:
        load_model(model, load_dir, prefix=prefix)
    except Exception as err:
        raise ConversionError(f"loading {load_dir} (prefix '{prefix}') into the model its HF config describes "
                              f"failed: {err}") from err
    out_dtype = stored if dtype == "auto" else runtime.DTYPES[dtype]
    total = sum(int(torch.Size(s).numel()) for s in expected_hf_shapes(hf).values()) * out_dtype.itemsize
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        write_safetensors(hf_tensors(model, hf, arch.padded_vocab_size, out_dtype), tmp, total, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(hf_config_for_export(hf, out_dtype), indent=2) + "\n")
        copy_tokenizer_files(tokenizer_dir, tmp)
    return Path(out_dir)
