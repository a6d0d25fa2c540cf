"""SFT dataset over a preprocessed prefix, plus deterministic epoch shuffling and data-parallel sharding.

Item convention (seq_length S): a stored sample of n token ids gives inputs ids[:-1] and labels ids[1:]
(n-1 positions; samples with n-1 > S are cut to their first S+1 ids), right-padded to S:
  tokens [S] int64, labels [S] int64, loss_mask [S] float32 (1 iff labels[t] is a supervised token;
  0 on padding), position_ids [S] int64 (0..S-1), segment_ids [S] int64 (1 on the sample's n-1
  positions, 0 on padding), sample_id str. Padding uses pad_token_id for tokens and labels.
`sample_lengths` gives each item's n-1 (label positions, at most S): what packing needs. Packing
(`data.pack`) is data/packing.py's PackedDataset over this dataset: whole samples per row, each with
its own segment id, attention kept per sample by models/packed_attention.py.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .indexed import open_dataset


def epoch_permutation(n: int, seed: int, epoch: int = 0, phase: int = 0) -> np.ndarray:
    """The same permutation of range(n) on every rank for a given (seed, epoch, phase) (numpy PCG64).

    `phase` numbers the training phases of a multi-phase run (Phase 1 SFT = 0, WD-JT iteration t = t,
    a study's second stage = 1): each phase draws its own shuffle of every epoch, so a second phase over
    the same data never replays the first one's order. Phase 0 keeps the single-phase order of
    `wmss train` (seed and epoch only)."""
    key = [int(seed), int(epoch)] if phase == 0 else [int(seed), int(epoch), int(phase)]
    return np.random.default_rng(key).permutation(int(n))


def dp_shard(indices_or_len, dp_rank: int, dp_size: int, *, drop_last: bool = True) -> np.ndarray:
    """Rank `dp_rank`'s share of `indices_or_len` (an int n means range(n)): elements rank, rank+size, ...

    Every rank gets the same count: drop_last=True drops the last len % dp_size elements, otherwise the
    list is padded by repeating its beginning. The shards of all ranks are disjoint (drop_last) and
    together cover the (possibly truncated) list in order.
    """
    if not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank {dp_rank} not in [0, {dp_size})")
    idx = np.arange(indices_or_len) if np.isscalar(indices_or_len) else np.asarray(indices_or_len)
    if drop_last:
        idx = idx[: len(idx) // dp_size * dp_size]
    elif len(idx) % dp_size:
        idx = np.resize(idx, len(idx) + dp_size - len(idx) % dp_size)  # np.resize repeats from the start
    return idx[dp_rank::dp_size]


class SFTDataset(torch.utils.data.Dataset):
    """Samples of a preprocessed dataset (megatron IndexedDataset tokens + mask, ids, manifest).

    active_ids: restrict to these sample ids (e.g. the WD-DS active set); kept in storage order; an
    unknown id raises KeyError. `sample_ids` lists this view's samples in order (before packing);
    `all_sample_ids` every stored sample. Deterministic given `seed` (`epoch_order`).
    """

    def __init__(self, path_prefix: str, seq_length: int, *, pad_token_id: int, seed: int = 0,
                 active_ids: Iterable[str] | None = None):
        if seq_length < 1:
            raise ValueError(f"seq_length must be >= 1, got {seq_length}")
        self.manifest, self._tokens, self._mask, records = open_dataset(path_prefix)
        vocab = self.manifest["tokenizer"]["vocab_size"]
        if not isinstance(pad_token_id, (int, np.integer)) or not 0 <= pad_token_id < vocab:
            raise ValueError(f"pad_token_id {pad_token_id!r} must be an int in [0, {vocab})")
        self.path_prefix, self.seq_length, self.pad_token_id = str(path_prefix), int(seq_length), int(pad_token_id)
        self.seed = int(seed)
        self.all_sample_ids = [r["id"] for r in records]
        if active_ids is None:
            self._index = np.arange(len(records), dtype=np.int64)
        else:
            where = {sid: i for i, sid in enumerate(self.all_sample_ids)}
            wanted = set(active_ids)
            missing = sorted(wanted - where.keys())
            if missing:
                raise KeyError(f"{len(missing)} active ids not in {path_prefix}: {missing[:5]}")
            self._index = np.sort(np.fromiter((where[s] for s in wanted), dtype=np.int64, count=len(wanted)))
        self.sample_ids = [self.all_sample_ids[i] for i in self._index]
        lengths = np.asarray(self._tokens.sequence_lengths, dtype=np.int64)[self._index]
        self._positions = np.minimum(lengths - 1, self.seq_length)  # label positions per sample
        self.num_truncated = int(np.sum(lengths - 1 > self.seq_length))

    @property
    def sample_lengths(self) -> np.ndarray:
        """Label positions of each item (n-1 for a sample of n ids, at most seq_length)."""
        return self._positions

    def __len__(self) -> int:
        return len(self._index)

    def epoch_order(self, epoch: int, phase: int = 0) -> np.ndarray:
        """Shuffled item indices for `epoch` of training phase `phase` (same on every rank)."""
        return epoch_permutation(len(self), self.seed, epoch, phase)

    def index_of(self, sample_id: str) -> int:
        """Item index of a sample id."""
        if not hasattr(self, "_where"):
            self._where = {sid: i for i, sid in enumerate(self.sample_ids)}
        return self._where[sample_id]

    def _read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and mask of the view's k-th sample, at most seq_length + 1 long."""
        doc = int(self._index[k])
        n = int(self._positions[k]) + 1
        return (self._tokens.get(doc, 0, n).astype(np.int64),
                self._mask.get(doc, 0, n).astype(np.float32))

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        s = self.seq_length
        ids, mask = self._read(i)
        n = len(ids) - 1
        tokens = np.full(s, self.pad_token_id, dtype=np.int64)
        labels = np.full(s, self.pad_token_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        segment_ids = np.zeros(s, dtype=np.int64)
        tokens[:n], labels[:n], loss_mask[:n], segment_ids[:n] = ids[:-1], ids[1:], mask[1:], 1
        return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
                "loss_mask": torch.from_numpy(loss_mask), "position_ids": torch.arange(s, dtype=torch.int64),
                "segment_ids": torch.from_numpy(segment_ids), "sample_id": self.sample_ids[i]}
