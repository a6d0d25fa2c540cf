"""Input readers: .jsonl, .jsonl.zst, .parquet and HF `datasets` directories (save_to_disk).

`iter_input(inp)` yields events in file order:
  ("row", line, payload)            payload: bytes (one JSONL line, undecoded) or a dict (parquet / datasets)
  ("error", line, reason, detail)   a file-level problem (unreadable file, truncated .zst); reading stops
Line numbers are 1-based (row numbers for parquet / datasets). sha256 and byte size of each input are
filled into its `InputFile` while it is read (JSONL) or before (parquet / datasets directories).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

_CHUNK = 1 << 20


@dataclass
class InputFile:
    path: str  # as given on the command line
    kind: str  # "jsonl" | "jsonl.zst" | "parquet" | "hf_dataset"
    split: str | None = None  # DatasetDict split
    sha256: str | None = None
    bytes: int = 0
    rows_read: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Name used in file:line messages."""
        return f"{self.path}[{self.split}]" if self.split else self.path


def _kind(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists() or (p / "dataset_info.json").exists():
            return "hf_dataset"
        raise ValueError(f"input {path}: a directory but not one saved by HF datasets (no state.json)")
    if not p.exists():
        raise FileNotFoundError(f"input {path}: no such file")
    name = p.name.lower()
    if name.endswith(".zst"):
        return "jsonl.zst"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise ValueError(f"input {path}: unknown type (expected .jsonl, .jsonl.zst, .parquet or a datasets directory)")


def expand_inputs(paths: list[str]) -> list[InputFile]:
    """One InputFile per file, and per split of a saved DatasetDict (splits in sorted order)."""
    out = []
    for path in paths:
        kind = _kind(path)
        if kind == "hf_dataset" and (Path(path) / "dataset_dict.json").exists():
            import json

            splits = json.loads((Path(path) / "dataset_dict.json").read_text())["splits"]
            out += [InputFile(path, kind, split=s) for s in sorted(splits)]
        else:
            out.append(InputFile(path, kind))
    return out


def sha256_path(path: str) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory (over relative names and file hashes, sorted)."""
    p = Path(path)
    if p.is_file():
        h, size = hashlib.sha256(), 0
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size
    h, size = hashlib.sha256(), 0
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        digest, n = sha256_path(str(f))
        h.update(f"{f.relative_to(p).as_posix()}\0{digest}\n".encode())
        size += n
    return h.hexdigest(), size


class _HashingRaw(io.RawIOBase):
    """Reads a file and hashes every byte read."""

    def __init__(self, f, inp: InputFile):
        self.f, self.inp, self.h = f, inp, hashlib.sha256()

    def readable(self):
        return True

    def readinto(self, b):
        n = self.f.readinto(b)
        if n:
            self.h.update(memoryview(b)[:n])
            self.inp.bytes += n
        return n


class _ZstdRaw(io.RawIOBase):
    """Streaming zstd decompression across frames that notices a stream cut inside a frame
    (zstandard's stream_reader silently returns EOF there)."""

    def __init__(self, raw):
        import zstandard

        self.raw, self.dctx = raw, zstandard.ZstdDecompressor()
        self.obj = self.dctx.decompressobj()
        self.buf, self.pos = b"", 0
        self.in_frame = self.eof = self.truncated = False

    def readable(self):
        return True

    def _feed(self, data: bytes) -> None:
        out = []
        while data:
            self.in_frame = True
            out.append(self.obj.decompress(data))
            if self.obj.eof:
                data, self.obj, self.in_frame = self.obj.unused_data, self.dctx.decompressobj(), False
            else:
                data = b""
        self.buf, self.pos = self.buf[self.pos :] + b"".join(out), 0

    def readinto(self, b):
        while self.pos >= len(self.buf) and not self.eof:
            chunk = self.raw.read(_CHUNK)
            if not chunk:
                self.eof, self.truncated = True, self.in_frame
                break
            self._feed(chunk)
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


def _iter_jsonl(inp: InputFile) -> Iterator[tuple]:
    line = 0
    with open(inp.path, "rb", buffering=0) as f:
        hashing = _HashingRaw(f, inp)
        zst = _ZstdRaw(hashing) if inp.kind == "jsonl.zst" else None
        reader = io.BufferedReader(zst or hashing, buffer_size=_CHUNK)
        pending, error = None, None  # hold one line back: a cut .zst makes its last line partial
        try:
            for raw in reader:
                if pending is not None:
                    yield ("row", line, pending)
                line += 1
                pending = raw
        except Exception as e:  # zstd.ZstdError on corrupt frames, OSError
            error = ("unreadable_file", f"{type(e).__name__}: {e}"[:200])
        if error is None and zst is not None and zst.truncated:
            error = ("truncated_zst", "compressed stream ends inside a frame; rest of file lost")
        if error is not None and pending is not None and not pending.endswith(b"\n"):
            yield ("error", line, *error)  # the partial last line is where the damage is
        else:
            if pending is not None:
                yield ("row", line, pending)
            if error is not None:
                yield ("error", line + 1, *error)
        while hashing.readinto(bytearray(_CHUNK)):  # hash what was not read (after an error)
            pass
    inp.sha256 = hashing.h.hexdigest()


def _iter_parquet(inp: InputFile) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    inp.sha256, inp.bytes = sha256_path(inp.path)
    line = 0
    try:
        for batch in pq.ParquetFile(inp.path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                line += 1
                yield ("row", line, row)
    except Exception as e:  # pyarrow.ArrowInvalid etc.
        yield ("error", line + 1, "unreadable_file", f"{type(e).__name__}: {e}"[:200])


def _iter_hf_dataset(inp: InputFile) -> Iterator[tuple]:
    import datasets

    target = os.path.join(inp.path, inp.split) if inp.split else inp.path
    inp.sha256, inp.bytes = sha256_path(target)
    line = 0
    try:
        ds = datasets.load_from_disk(target)
        for batch in ds.iter(batch_size=1024):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                line += 1
                yield ("row", line, dict(zip(keys, values)))
    except Exception as e:
        yield ("error", line + 1, "unreadable_file", f"{type(e).__name__}: {e}"[:200])


def iter_input(inp: InputFile) -> Iterator[tuple]:
    """Events of one input (see module doc); counts rows into inp.rows_read."""
    reader = {"jsonl": _iter_jsonl, "jsonl.zst": _iter_jsonl, "parquet": _iter_parquet,
              "hf_dataset": _iter_hf_dataset}[inp.kind]
    for event in reader(inp):
        if event[0] == "row":
            inp.rows_read += 1
        yield event
