"""Sequence packing: whole samples placed first-fit-decreasing into rows of `seq_length`, each row
carrying which positions belong to which sample, so that attention and per-sample statistics can be
kept apart (models/packed_attention.py builds the attention inputs from it).

A packed row (keys of an item, like the unpacked SFTDataset items; seq_length S):
  tokens, labels [S] int64 (pad id on the tail), loss_mask [S] float32 (the members' own masks, 0 on the
  tail), position_ids [S] int64 (0..n-1 for each member, 0.. again on the tail), segment_ids [S] int64
  (k for the k-th member, 1-based; 0 on the padding tail), member_ids (the members' sample ids, in row
  order) and sample_id (those ids joined by "+").
An unpacked item is the one-member case: segment_ids 1 on its positions, 0 on the padding.

Each member contributes its own n label positions (labels already shifted inside the sample), so no
label crosses a sample boundary. Samples without a label position are left out.
"""

from __future__ import annotations

import numpy as np
import torch

from megatron_wmss.data.sft_dataset import epoch_permutation

_PACK_STREAM = 0x7061636B  # separates the packing order from the epoch shuffles


class _FirstFit:
    """Max segment tree over the free space of `n` bins: the leftmost bin with room, in O(log n)."""

    def __init__(self, n: int, capacity: int):
        self.size = 1
        while self.size < max(n, 1):
            self.size *= 2
        self.free = [capacity] * (2 * self.size)

    def place(self, cost: int) -> int:
        """Put `cost` into the first bin it fits in (never-used bins come after all used ones)."""
        free, node = self.free, 1
        while node < self.size:
            node = 2 * node if free[2 * node] >= cost else 2 * node + 1
        free[node] -= cost
        leaf = node - self.size
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
        return leaf


def pack_bins(lengths, capacity: int, seed: int) -> list[list[int]]:
    """First-fit-decreasing bins of at most `capacity` positions: lists of indices into `lengths`.

    Samples are placed longest first, equal lengths in an order drawn from `seed`; each goes into the
    first row with room. A length above `capacity` counts as `capacity` (the sample is cut to the row,
    as the dataset truncates it) and fills a row alone; zero lengths are left out. Deterministic given
    (lengths, capacity, seed); every positive-length index appears exactly once.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    cost = np.minimum(np.asarray(lengths, dtype=np.int64).reshape(-1), capacity)
    ties = np.random.default_rng([int(seed), _PACK_STREAM]).permutation(len(cost))
    order = np.lexsort((ties, -cost))  # by decreasing cost, then by the seed's order
    order = order[cost[order] > 0]
    slots, bins = _FirstFit(len(order), capacity), []
    for index in order.tolist():
        row = slots.place(int(cost[index]))
        if row == len(bins):
            bins.append([])
        bins[row].append(index)
    return bins


def pack_row(items: list[dict], lengths, seq_length: int, pad_token_id: int) -> dict:
    """One packed row (module docstring) from unpacked items and their label-position counts."""
    s = seq_length
    if sum(int(n) for n in lengths) > s:
        raise ValueError(f"{sum(lengths)} positions do not fit a row of {s}")
    row = {"tokens": torch.full((s,), pad_token_id, dtype=torch.int64),
           "labels": torch.full((s,), pad_token_id, dtype=torch.int64),
           "loss_mask": torch.zeros(s, dtype=torch.float32),
           "position_ids": torch.zeros(s, dtype=torch.int64),
           "segment_ids": torch.zeros(s, dtype=torch.int64)}
    at = 0
    for k, (item, n) in enumerate(zip(items, lengths), start=1):
        n = int(n)
        for key in ("tokens", "labels", "loss_mask"):
            row[key][at:at + n] = item[key][:n]
        row["position_ids"][at:at + n] = torch.arange(n)
        row["segment_ids"][at:at + n] = k
        at += n
    row["position_ids"][at:] = torch.arange(s - at)
    row["member_ids"] = [item["sample_id"] for item in items]
    row["sample_id"] = "+".join(row["member_ids"])
    return row


def pack_members(samples, members: list[int]) -> dict:
    """The packed row of `samples`' items `members` (indices whose label positions fit one row); `samples`
    offers `sample_lengths` (at most seq_length each), `seq_length` and `pad_token_id`."""
    lengths = np.asarray(samples.sample_lengths)[members]
    return pack_row([samples[k] for k in members], lengths, int(samples.seq_length), int(samples.pad_token_id))


class PackedDataset(torch.utils.data.Dataset):
    """The samples of an unpacked dataset (an SFTDataset or an ActiveSubset of one, whose ids may
    repeat) packed into rows by `pack_bins` with `seed`. `samples` must offer `sample_lengths` (label
    positions per item), `seq_length` and `pad_token_id`. `rows` lists each row's item indices; rows
    are shuffled per epoch like unpacked items (`epoch_order`)."""

    def __init__(self, samples, *, seed: int):
        self.samples, self.seed = samples, int(seed)
        self.seq_length, self.pad_token_id = int(samples.seq_length), int(samples.pad_token_id)
        self.rows = pack_bins(samples.sample_lengths, self.seq_length, self.seed)
        if not self.rows:
            raise ValueError("no sample has a label position to pack")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return pack_members(self.samples, self.rows[i])

    def epoch_order(self, epoch: int, phase: int = 0) -> np.ndarray:
        """Shuffled row indices for `epoch` of training phase `phase` (same on every rank)."""
        return epoch_permutation(len(self), self.seed, epoch, phase)


def segment_ids(batch: dict) -> torch.Tensor:
    """The batch's `[b, s]` segment ids; a batch without them (rows of one sample) is one segment."""
    segments = batch.get("segment_ids")
    return torch.ones_like(batch["tokens"]) if segments is None else segments
