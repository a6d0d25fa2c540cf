"""HF checkpoint files: lazy safetensors reading (single or sharded), sharded writing, tokenizer files,
and atomic output directories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from megatron_wmss.checkpoint import TOKENIZER_FILES
from megatron_wmss.convert.mappings import ConversionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


class SafetensorsReader:
    """The tensors of a HF directory, opened lazily: names, shapes and dtypes from the headers; data
    only when `get` is called."""

    def __init__(self, hf_dir: str | Path):
        from safetensors import safe_open

        self.dir = Path(hf_dir)
        if (self.dir / INDEX_FILE).is_file():
            weight_map = json.loads((self.dir / INDEX_FILE).read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.dir / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.dir.glob("*.bin")) if self.dir.is_dir() else []
            hint = f" (found {', '.join(found)}: convert them to safetensors first)" if found else ""
            raise ConversionError(f"no {SINGLE_FILE} or {INDEX_FILE} in {self.dir}{hint}")
        self._handles = {}
        self._file_of: dict[str, str] = {}
        for name in files:
            path = self.dir / name
            if not path.is_file():
                raise ConversionError(f"safetensors shard {path} listed in {INDEX_FILE} is missing")
            handle = safe_open(str(path), framework="pt")
            self._handles[name] = handle
            for key in handle.keys():
                self._file_of[key] = name

    def names(self) -> list[str]:
        return sorted(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._file_of[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        tag = self._handles[self._file_of[name]].get_slice(name).get_dtype()
        return _SAFETENSORS_DTYPES[tag]

    def get(self, name: str) -> torch.Tensor:
        if name not in self._file_of:
            raise ConversionError(f"tensor {name} is missing from {self.dir}")
        return self._handles[self._file_of[name]].get_tensor(name)


_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def write_safetensors(tensors: Iterator[tuple[str, torch.Tensor]], out_dir: Path, total_bytes: int,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write (name, tensor) pairs as `model.safetensors`, or as numbered shards plus
    `model.safetensors.index.json` when `total_bytes` exceeds `max_shard_bytes`. Holds one shard in
    memory at a time. Returns the file names written."""
    from safetensors.torch import save_file

    if total_bytes <= max_shard_bytes:
        save_file({n: t.contiguous() for n, t in tensors}, str(out_dir / SINGLE_FILE), metadata={"format": "pt"})
        return [SINGLE_FILE]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    temp_names = []
    weight_map = {}

    def flush():
        name = f"shard-{len(temp_names):05d}.tmp"
        save_file(shards[-1], str(out_dir / name), metadata={"format": "pt"})
        temp_names.append((name, list(shards[-1])))
        shards[-1] = {}

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            flush()
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += nbytes
    if shards[-1]:
        flush()
    final = []
    for i, (temp, keys) in enumerate(temp_names):
        name = f"model-{i + 1:05d}-of-{len(temp_names):05d}.safetensors"
        os.replace(out_dir / temp, out_dir / name)
        weight_map.update({k: name for k in keys})
        final.append(name)
    index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return final


def copy_tokenizer_files(src: Path | None, dst: Path) -> list[str]:
    """Copy the tokenizer / chat-template / generation files present in `src` to `dst`."""
    copied = []
    if src is None or not Path(src).is_dir():
        return copied
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, dst / name)
            copied.append(name)
    return copied


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False):
    """Yield a temporary sibling directory `<out>.tmp-XXXX`; on success rename it to `out`, on any
    error delete it, so `out` only ever appears complete."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"output directory {out} already exists (remove it or pass --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
    try:
        yield tmp
        for root, _, files in os.walk(tmp):  # some writers create 0600 files; use the umask instead
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~umask)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
