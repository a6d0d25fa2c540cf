"""The training set a recipe's `data` section names: the preprocessed prefix, opened as an SFTDataset."""

from __future__ import annotations

from megatron_wmss.data.indexed import read_manifest
from megatron_wmss.data.sft_dataset import SFTDataset


def open_sft_dataset(data_cfg) -> SFTDataset:
    """`data.path` at `data.seq_length` (packed when `data.pack`), padded with the tokenizer's pad id
    (else its end-of-text id) from the manifest that `wmss preprocess` wrote."""
    tokenizer = read_manifest(data_cfg.path).get("tokenizer", {})
    pad = tokenizer.get("pad_token_id")
    if pad is None:
        pad = tokenizer.get("eos_token_id") or 0
    return SFTDataset(data_cfg.path, data_cfg.seq_length, pad_token_id=int(pad), seed=data_cfg.seed, pack=data_cfg.pack)
