"""Preference pairs: the JSONL pair row, and the dataset of pairs over a preprocessed prefix.

Pair row (`wmss preprocess --input-format pairs`, written by `wmss w2s pairs`), one JSON object a line:

    {"id": "gsm8k-17",                                   # optional; else a hash of the row
     "prompt": [{"role": "user", "content": "..."}],     # the messages before the answer (system optional)
     "chosen": "the preferred assistant answer",
     "rejected": "the dispreferred assistant answer",
     "info": {...}}                                      # optional, kept out of training

Preprocessing renders `prompt + [assistant: chosen]` and `prompt + [assistant: rejected]` as two chat
samples with assistant-only masks and stores them one after the other, with ids `<id>/chosen` and
`<id>/rejected`; the manifest records `"pairs": true`. `PairDataset` reads them back as pairs.
"""

from __future__ import annotations

import numpy as np
import torch

CHOSEN, REJECTED = "/chosen", "/rejected"
KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def pair_conversations(row: dict) -> tuple[list[dict], list[dict]]:
    """(chosen, rejected) conversations of a pair row; ValueError naming the field when malformed."""
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt):
        raise ValueError("'prompt' must be a non-empty list of {role, content} messages")
    if prompt[-1]["role"] != "user":
        raise ValueError("'prompt' must end with a user message")
    out = []
    for key in ("chosen", "rejected"):
        answer = row.get(key)
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"'{key}' must be a non-empty string")
        out.append([dict(m) for m in prompt] + [{"role": "assistant", "content": answer}])
    if row["chosen"] == row["rejected"]:
        raise ValueError("'chosen' and 'rejected' are the same text")
    return out[0], out[1]


class PairDataset(torch.utils.data.Dataset):
    """Pairs of an unpacked SFTDataset whose samples are stored chosen, rejected, chosen, ... (a prefix
    preprocessed from pair rows). Item i: the `[2, S]` tensors of pair i (row 0 chosen, 1 rejected) and
    its `sample_id` (the pair's id)."""

    def __init__(self, sequences):
        from megatron_wmss.data.packing import PackedDataset

        if isinstance(sequences, PackedDataset):
            raise ValueError("data.pack: pair data must not be packed; use data.pack=false")
        ids = list(sequences.sample_ids)
        if len(ids) % 2 or not ids:
            raise ValueError(f"{getattr(sequences, 'path_prefix', 'the dataset')}: not pair data (preprocess "
                             "pair rows with --input-format pairs)")
        chosen, rejected = ids[0::2], ids[1::2]
        bad = next(((c, r) for c, r in zip(chosen, rejected)
                    if not (c.endswith(CHOSEN) and r.endswith(REJECTED) and c[:-len(CHOSEN)] == r[:-len(REJECTED)])),
                   None)
        if bad is not None:
            raise ValueError(f"{getattr(sequences, 'path_prefix', 'the dataset')}: not pair data: samples {bad} are "
                             "not '<id>/chosen' followed by '<id>/rejected' (preprocess with --input-format pairs)")
        self.sequences = sequences
        self.sample_ids = [c[:-len(CHOSEN)] for c in chosen]
        self.seed = getattr(sequences, "seed", 0)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        chosen, rejected = self.sequences[2 * i], self.sequences[2 * i + 1]
        out = {key: torch.stack([chosen[key], rejected[key]]) for key in KEYS}
        out["sample_id"] = self.sample_ids[i]
        return out

    def epoch_order(self, epoch: int, phase: int = 0) -> np.ndarray:
        from megatron_wmss.data.sft_dataset import epoch_permutation

        return epoch_permutation(len(self), self.seed, epoch, phase)
