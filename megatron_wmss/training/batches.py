"""Which samples each step and each data-parallel rank trains on, deterministically.

The sample stream is the concatenation of per-epoch shuffles (`dataset.epoch_order(e, phase)`, the
same on every rank; `phase` numbers the phases of a multi-phase run, so each phase shuffles anew). Step k trains on stream positions [k*G, (k+1)*G) for global batch G; data-parallel rank r
takes the r-th contiguous G/dp slice, split into micro-batches. The number of steps is
ceil(epochs * N / G) unless `train_iters` is given, so the last step may reach into the next epoch's
shuffle rather than drop samples. The only state is the step number, which makes resume exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class GlobalBatchSchedule:
    def __init__(self, dataset, *, global_batch_size: int, micro_batch_size: int, dp_size: int, dp_rank: int,
                 epochs: float = 1.0, train_iters: int | None = None, phase: int = 0, pad_to_longest: bool = False,
                 length_multiple: int = 1):
        per_rank, remainder = divmod(global_batch_size, dp_size)
        if remainder or per_rank % micro_batch_size:
            raise ValueError(
                f"training.global_batch_size={global_batch_size} must be a multiple of "
                f"training.micro_batch_size * data-parallel size = {micro_batch_size} * {dp_size}")
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.dataset = dataset
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.per_rank = per_rank
        self.num_microbatches = per_rank // micro_batch_size
        self.total_steps = train_iters or max(1, math.ceil(epochs * len(dataset) / global_batch_size))
        self.phase = phase
        self.pad_to_longest, self.length_multiple = pad_to_longest, length_multiple
        self._orders: dict[int, list[int]] = {}

    def _sample_at(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch not in self._orders:
            self._orders = {epoch: self.dataset.epoch_order(epoch, self.phase).tolist()}  # keep one epoch cached
        return self._orders[epoch][offset]

    def rank_samples(self, step: int) -> list[int]:
        """This rank's dataset indices for `step`, in micro-batch order."""
        start = step * self.global_batch_size + self.dp_rank * self.per_rank
        return [self._sample_at(p) for p in range(start, start + self.per_rank)]

    def micro_batches(self, step: int) -> list[dict]:
        """This rank's micro-batches for `step`, each a dict of stacked [b, s] tensors + sample ids."""
        samples = [self.dataset[i] for i in self.rank_samples(step)]
        batches = [stack_items(samples[m * self.micro_batch_size:(m + 1) * self.micro_batch_size])
                   for m in range(self.num_microbatches)]
        return [trim_to_longest(b, self.length_multiple) for b in batches] if self.pad_to_longest else batches


def stack_items(items: list[dict]) -> dict:
    """A micro-batch from dataset items: their [s] tensors stacked to [b, s] (segment_ids when the items
    have them), `sample_ids` (one str per row) and `member_ids` (per row, the ids of its samples: one for
    an unpacked item, several for a packed row, data/packing.py)."""
    keys = ("tokens", "labels", "loss_mask", "position_ids") + (("segment_ids",) if "segment_ids" in items[0] else ())
    batch = {k: torch.stack([item[k] for item in items]) for k in keys}
    batch["sample_ids"] = [item["sample_id"] for item in items]
    batch["member_ids"] = [item.get("member_ids", [item["sample_id"]]) for item in items]
    return batch


def trim_to_longest(batch: dict, multiple: int = 1) -> dict:
    """`data.pad_to=longest`: the micro-batch's [b, s] tensors cut after the last sample position of its
    longest row (segment_ids > 0; a batch without segment ids is kept whole), rounded up to a multiple of
    `multiple` (the TP size under sequence parallelism, which splits the sequence over the TP ranks).
    Causal attention makes the kept positions' outputs, and so the loss, those of the full-length batch."""
    if "segment_ids" not in batch:
        return batch
    used = torch.nonzero((batch["segment_ids"] > 0).any(dim=0))
    length = int(used.max()) + 1 if len(used) else 1
    length = min(-(-length // multiple) * multiple, batch["tokens"].shape[1])
    return {k: v[:, :length] if torch.is_tensor(v) else v for k, v in batch.items()}


class ActiveSubset(torch.utils.data.Dataset):
    """The WD-DS active set as a view of the full dataset. Ids may repeat (wmss.dedupe=false keeps the
    drawn multiset): a repeated id is trained on as often as it was drawn. Packable (data/packing.py):
    it passes on the dataset's `seq_length`, `pad_token_id` and per-item `sample_lengths`."""

    def __init__(self, dataset, sample_ids: list[str]):
        if not sample_ids:
            raise ValueError("the active set is empty")
        self.dataset = dataset
        self.indices = [dataset.index_of(sid) for sid in sample_ids]
        self.sample_ids = list(sample_ids)
        self.seed = getattr(dataset, "seed", 0)
        self.seq_length, self.pad_token_id = getattr(dataset, "seq_length", None), getattr(dataset, "pad_token_id", None)

    @property
    def sample_lengths(self):
        """Label positions of each item (a repeated id counts each time)."""
        return np.asarray(self.dataset.sample_lengths)[self.indices]

    @classmethod
    def from_file(cls, dataset, path) -> "ActiveSubset":
        """One sample id per line, as written by WD-DS (`active_set.txt`)."""
        from pathlib import Path

        return cls(dataset, [line.strip() for line in Path(path).read_text().splitlines() if line.strip()])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.indices[i]]

    def epoch_order(self, epoch: int, phase: int = 0):
        from megatron_wmss.data import epoch_permutation

        return epoch_permutation(len(self), self.seed, epoch, phase)
