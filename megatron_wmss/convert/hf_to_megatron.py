"""HF directory (config.json, safetensors, tokenizer files) -> megatron dist checkpoint loadable at any
TP/PP, with `hf_config.json` and `tokenizer/` next to it (checkpoint.write_model_metadata)."""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_wmss.convert import runtime
from megatron_wmss.convert.hf_io import SafetensorsReader, atomic_output_dir
from megatron_wmss.convert.mappings import (ConversionError, build_maps, check_convertible, dims_from,
                                            expected_hf_shapes, ignorable_hf_tensor, to_megatron)

_MAX_LISTED = 10


def check_hf_config(hf: dict, tp: int = 1, pp: int = 1) -> None:
    """Raise (UnsupportedModelError / ConversionError naming the field or value) if `hf` cannot be
    converted or trained at this TP/PP."""
    from megatron_wmss.models.build import transformer_config_from_hf

    check_convertible(hf)
    try:
        transformer_config_from_hf(hf, tp=tp, pp=1, params_dtype="fp32", transformer_impl="local")
        layers = hf["num_hidden_layers"]
    except KeyError as err:
        raise ConversionError(f"config.json has no {err}") from err
    if pp < 1 or layers % pp:
        raise ConversionError(f"pipeline parallel size {pp} does not divide num_hidden_layers={layers}")


def check_hf_tensors(hf: dict, reader: SafetensorsReader) -> None:
    """Every tensor the model needs is present with the right shape, and nothing unknown is there."""
    expected = expected_hf_shapes(hf)
    present = set(reader.names())
    problems = [f"missing tensor {n} (expected shape {list(s)})" for n, s in expected.items() if n not in present]
    problems += [f"tensor {n} has shape {list(reader.shape(n))}, expected {list(s)}"
                 for n, s in expected.items() if n in present and reader.shape(n) != s]
    problems += [f"unexpected tensor {n} (no megatron counterpart for model_type '{hf['model_type']}')"
                 for n in sorted(present - set(expected)) if not ignorable_hf_tensor(n, hf)]
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ConversionError(f"{reader.dir} does not match its config.json:\n  "
                              + "\n  ".join(problems[:_MAX_LISTED]) + more)


def validate_hf_checkpoint(hf_dir: str | Path, tp: int = 1, pp: int = 1) -> tuple[dict, SafetensorsReader]:
    """Check config and tensor headers (no tensor data read); return (config, reader)."""
    from megatron_wmss.models.build import load_hf_config

    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ConversionError(f"HF model directory not found: {hf_dir}")
    hf = load_hf_config(hf_dir)
    check_hf_config(hf, tp=tp, pp=pp)
    reader = SafetensorsReader(hf_dir)
    check_hf_tensors(hf, reader)
    return hf, reader


@torch.no_grad()
def fill_model(model, hf: dict, reader: SafetensorsReader, padded_vocab: int) -> None:
    """Copy the HF tensors into the TP=1/PP=1 `model`; every parameter must be covered."""
    params = dict(model.named_parameters())
    maps = build_maps(hf)
    mapped = {m.megatron for m in maps}
    if set(params) != mapped:
        raise ConversionError(f"mapping and megatron model disagree: parameters without a mapping "
                              f"{sorted(set(params) - mapped)}, mappings without a parameter {sorted(mapped - set(params))}")
    dims = dims_from(hf, padded_vocab)
    for tmap in maps:
        value = to_megatron(tmap, [reader.get(n) for n in tmap.hf], dims)
        param = params[tmap.megatron]
        if tuple(value.shape) != tuple(param.shape):
            raise ConversionError(f"{tmap.megatron} built from {', '.join(tmap.hf)} has shape "
                                  f"{list(value.shape)}, the model expects {list(param.shape)}")
        param.copy_(value.to(param.dtype))


def convert_hf_to_megatron(hf_dir: str | Path, out_dir: str | Path, *, tp: int = 1, pp: int = 1,
                           dtype: str = "auto", make_vocab_size_divisible_by: int = 128,
                           overwrite: bool = False) -> Path:
    """Convert a HF directory to a megatron checkpoint in `out_dir` (atomically). `tp`/`pp` only
    validate that the model can be trained at that layout; the checkpoint loads at any layout.
    `dtype` 'auto' keeps the stored dtype of the embedding."""
    from megatron_wmss.checkpoint import save_model, write_model_metadata

    hf, reader = validate_hf_checkpoint(hf_dir, tp=tp, pp=pp)
    if dtype == "auto":
        dtype = runtime.dtype_name(reader.dtype("model.embed_tokens.weight"), "model.embed_tokens.weight")
    elif dtype not in runtime.DTYPES:
        raise ConversionError(f"--dtype {dtype} is not one of auto, {', '.join(runtime.DTYPES)}")
    runtime.ensure_single_process()
    model, arch = runtime.build_model(hf, dtype, make_vocab_size_divisible_by)
    fill_model(model, hf, reader, arch.padded_vocab_size)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        save_model(model, tmp)
        write_model_metadata(tmp, hf, Path(hf_dir))
    return Path(out_dir)
