"""The training set a recipe's `data` section names: the preprocessed prefix, opened as an SFTDataset
(`open_samples`) and packed into rows when `data.pack` (`training_rows`; `open_sft_dataset` does both)."""

from __future__ import annotations

from megatron_wmss.data.indexed import read_manifest
from megatron_wmss.data.sft_dataset import SFTDataset


def open_samples(data_cfg) -> SFTDataset:
    """`data.path` at `data.seq_length`, one sample per item, padded with the tokenizer's pad id (else its
    end-of-text id) from the manifest that `wmss preprocess` wrote."""
    tokenizer = read_manifest(data_cfg.path).get("tokenizer", {})
    pad = tokenizer.get("pad_token_id")
    if pad is None:
        pad = tokenizer.get("eos_token_id") or 0
    return SFTDataset(data_cfg.path, data_cfg.seq_length, pad_token_id=int(pad), seed=data_cfg.seed)


def training_rows(samples, data_cfg):
    """What is trained on: `samples` (an SFTDataset or an ActiveSubset of one) packed into rows with
    `data.seed` when `data.pack` (data/packing.py), else `samples` itself."""
    if not data_cfg.pack:
        return samples
    from megatron_wmss.data.packing import PackedDataset

    return PackedDataset(samples, seed=data_cfg.seed)


def open_sft_dataset(data_cfg):
    """The training rows of `data` (`training_rows(open_samples(data_cfg), data_cfg)`)."""
    return training_rows(open_samples(data_cfg), data_cfg)
