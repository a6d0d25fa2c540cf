"""On-disk layout of a preprocessed SFT dataset, its atomic writer and its loader.

For an output prefix P:
  P.bin / P.idx            megatron-core IndexedDataset of token ids (one document per sample)
  P_mask.bin / P_mask.idx  IndexedDataset (uint8) of the loss mask, same lengths: 1 = supervised token
  P.ids.jsonl              one line per sample, in order: {"id", "source", "origin": "file:line"}
  P.manifest.json          written last; the dataset is complete iff it exists and matches the files

Everything is written under temporary names (P.incomplete-<pid>...) and renamed at the end, the
manifest last, so an interrupted run never leaves files that load as a whole dataset.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

FORMAT = "megatron_wmss.sft_indexed/v1"
MASK_SUFFIX = "_mask"


def dataset_files(prefix: str) -> dict[str, str]:
    """Final paths of every file of the dataset at `prefix`."""
    return {
        "tokens_bin": prefix + ".bin",
        "tokens_idx": prefix + ".idx",
        "mask_bin": prefix + MASK_SUFFIX + ".bin",
        "mask_idx": prefix + MASK_SUFFIX + ".idx",
        "ids": prefix + ".ids.jsonl",
        "manifest": prefix + ".manifest.json",
    }


def _megatron_indexed():
    """megatron.core.datasets.indexed_dataset, without its import-time 'no Apex / TE' warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def token_dtype(vocab_size: int):
    """uint16 when every id fits, else int32 (as megatron's DType.optimal_dtype)."""
    return np.uint16 if vocab_size < 65500 else np.int32


class AtomicDatasetWriter:
    """Builds tokens, mask and ids under temporary names; `commit(manifest)` renames them into place."""

    def __init__(self, prefix: str, vocab_size: int):
        IndexedDatasetBuilder = _megatron_indexed().IndexedDatasetBuilder
        self.prefix = prefix
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        self.tmp = dataset_files(f"{prefix}.incomplete-{os.getpid()}")
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self.tokens = IndexedDatasetBuilder(self.tmp["tokens_bin"], dtype=self.dtype)
        self.mask = IndexedDatasetBuilder(self.tmp["mask_bin"], dtype=np.uint8)
        self.ids = open(self.tmp["ids"], "w", encoding="utf-8")
        self.count = 0
        self._done = False

    def add(self, ids: np.ndarray, mask: np.ndarray, sample_id: str, source: str, origin: str) -> None:
        import torch

        if len(ids) != len(mask) or len(ids) == 0:
            raise ValueError(f"sample {sample_id}: {len(ids)} ids vs {len(mask)} mask entries")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"sample {sample_id}: token id outside [0, {self.vocab_size})")
        self.tokens.add_item(torch.from_numpy(np.ascontiguousarray(ids, dtype=self.dtype)))
        self.tokens.end_document()
        self.mask.add_item(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)))
        self.mask.end_document()
        self.ids.write(json.dumps({"id": sample_id, "source": source, "origin": origin}, ensure_ascii=False) + "\n")
        self.count += 1

    def commit(self, manifest: dict) -> dict:
        """Finalize indexes, rename data files into place, then write the manifest (with file sizes)."""
        self.tokens.finalize(self.tmp["tokens_idx"])
        self.mask.finalize(self.tmp["mask_idx"])
        self.ids.close()
        final = dataset_files(self.prefix)
        if os.path.exists(final["manifest"]):
            os.remove(final["manifest"])  # an old manifest must never describe new files
        sizes = {}
        for key in ("tokens_bin", "tokens_idx", "mask_bin", "mask_idx", "ids"):
            os.replace(self.tmp[key], final[key])
            sizes[key] = os.path.getsize(final[key])
        manifest = dict(manifest)
        manifest["format"] = FORMAT
        manifest["files"] = {"token_dtype": np.dtype(self.dtype).name, "sizes": sizes, "num_samples": self.count}
        tmp_manifest = self.tmp["manifest"]
        with open(tmp_manifest, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_manifest, final["manifest"])
        self._done = True
        return manifest

    def abort(self) -> None:
        """Remove the temporary files (an interrupted or failed run)."""
        if self._done:
            return
        for closer in (self.tokens.data_file, self.mask.data_file, self.ids):
            try:
                closer.close()
            except Exception:
                pass
        for path in self.tmp.values():
            if os.path.exists(path):
                os.remove(path)
        self._done = True


def read_manifest(path_prefix: str) -> dict:
    """The manifest of the dataset at `path_prefix` (raises FileNotFoundError if the dataset is incomplete)."""
    path = dataset_files(str(path_prefix))["manifest"]
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no manifest, so no complete dataset at prefix {path_prefix!r} "
                                "(preprocessing did not finish?)")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def read_ids(path_prefix: str) -> list[dict]:
    with open(dataset_files(str(path_prefix))["ids"], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def open_dataset(path_prefix: str):
    """-> (manifest, tokens IndexedDataset, mask IndexedDataset, id records); checks they belong together."""
    IndexedDataset = _megatron_indexed().IndexedDataset
    path_prefix = str(path_prefix)
    manifest = read_manifest(path_prefix)
    files = dataset_files(path_prefix)
    for key, size in manifest["files"]["sizes"].items():
        path = files[key]
        if not os.path.exists(path) or os.path.getsize(path) != size:
            raise ValueError(f"{path}: missing or size differs from the manifest ({size} bytes); "
                             "dataset files were changed after preprocessing")
    tokens = IndexedDataset(path_prefix)
    mask = IndexedDataset(path_prefix + MASK_SUFFIX)
    records = read_ids(path_prefix)
    n = manifest["files"]["num_samples"]
    if not (len(tokens) == len(mask) == len(records) == n):
        raise ValueError(f"{path_prefix}: {len(tokens)} token rows, {len(mask)} mask rows, "
                         f"{len(records)} ids, manifest says {n}")
    if not np.array_equal(tokens.sequence_lengths, mask.sequence_lengths):
        raise ValueError(f"{path_prefix}: token and mask lengths differ")
    return manifest, tokens, mask, records
