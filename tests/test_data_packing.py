"""The packer (first-fit-decreasing, deterministic from the seed) and the attention inputs built from
segment ids: the block-diagonal causal mask of the local spec and the THD cu_seqlens of Transformer
Engine (built on CPU only; the TE attention itself needs a GPU and is not run here)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megatron_wmss.data.packing import pack_bins, pack_row
from megatron_wmss.errors import ConfigError
from megatron_wmss.models.packed_attention import attention_inputs, block_causal_mask, packed_seq_params


def _lengths(n=500, seed=0):
    return np.random.default_rng(seed).integers(1, 300, n)


def test_every_sample_once_and_no_row_over_capacity():
    lengths = _lengths()
    rows = pack_bins(lengths, 512, seed=1)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert max(int(lengths[row].sum()) for row in rows) <= 512
    # first-fit-decreasing leaves at most one row at most half full
    assert sum(int(lengths[row].sum()) <= 256 for row in rows) <= 1


def test_deterministic_from_the_seed():
    lengths = np.repeat([5, 3, 2], 20)  # many ties
    assert pack_bins(lengths, 10, seed=4) == pack_bins(lengths.tolist(), 10, seed=4)
    assert pack_bins(lengths, 10, seed=4) != pack_bins(lengths, 10, seed=5)


def test_first_fit_decreasing_order():
    assert pack_bins([2, 7, 5, 3, 8, 4], 10, seed=0) == [[4, 0], [1, 3], [2, 5]]


def test_long_samples_fill_a_row_alone_and_empty_ones_are_left_out():
    rows = pack_bins([30, 0, 4, 12, 6], 10, seed=0)
    assert sorted(map(sorted, rows)) == [[0], [2, 4], [3]]
    with pytest.raises(ValueError):
        pack_bins([1], 0, seed=0)


def test_pack_row_cuts_each_member_to_its_length():
    items = [{"tokens": torch.arange(10) + 100 * k, "labels": torch.arange(10) + 100 * k + 1,
              "loss_mask": torch.ones(10), "sample_id": f"s{k}"} for k in range(2)]
    row = pack_row(items, [3, 4], 9, pad_token_id=7)
    assert row["tokens"].tolist() == [0, 1, 2, 100, 101, 102, 103, 7, 7]
    assert row["segment_ids"].tolist() == [1, 1, 1, 2, 2, 2, 2, 0, 0]
    assert row["position_ids"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert row["loss_mask"].tolist() == [1] * 7 + [0, 0]
    assert row["member_ids"] == ["s0", "s1"] and row["sample_id"] == "s0+s1"
    with pytest.raises(ValueError):
        pack_row(items, [5, 5], 9, pad_token_id=7)


def test_block_causal_mask():
    segments = torch.tensor([[1, 1, 2, 2, 2, 0]])
    allowed = ~block_causal_mask(segments)[0, 0]
    assert block_causal_mask(segments).shape == (1, 1, 6, 6)
    want = torch.zeros(6, 6, dtype=torch.bool)
    for block in ((0, 2), (2, 5), (5, 6)):
        for q in range(*block):
            want[q, block[0]:q + 1] = True
    assert torch.equal(allowed, want)


def test_thd_cu_seqlens():
    params = packed_seq_params(torch.tensor([[1, 1, 1, 2, 3, 3, 0, 0]]))
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == [0, 3, 4, 6, 8] and params.cu_seqlens_q.dtype == torch.int32
    assert torch.equal(params.cu_seqlens_kv, params.cu_seqlens_q)
    assert params.max_seqlen_q == params.max_seqlen_kv == 3
    with pytest.raises(ConfigError, match="training.micro_batch_size"):
        packed_seq_params(torch.ones(2, 8, dtype=torch.int64))


def _model(impl="local", window_size=None, bf16=False):
    config = SimpleNamespace(window_size=window_size, masked_softmax_fusion=bf16, bf16=bf16, fp16=False)
    return SimpleNamespace(config=config, transformer_impl=impl)


def test_attention_inputs_per_implementation():
    packed = {"tokens": torch.zeros(1, 4), "segment_ids": torch.tensor([[1, 1, 2, 0]])}
    single = {"tokens": torch.zeros(1, 4), "segment_ids": torch.tensor([[1, 1, 1, 0]])}
    assert attention_inputs(single, _model()) == {"attention_mask": None}
    assert attention_inputs({"tokens": torch.zeros(1, 4)}, _model()) == {"attention_mask": None}
    assert attention_inputs(packed, _model())["attention_mask"].shape == (1, 1, 4, 4)
    te = attention_inputs(packed, _model("transformer_engine"))
    assert te["attention_mask"] is None and te["packed_seq_params"].cu_seqlens_q.tolist() == [0, 2, 3, 4]
    with pytest.raises(ConfigError, match="data.pack"):
        attention_inputs(packed, _model(window_size=(7, 0)))
    with pytest.raises(ConfigError, match="data.pack"):
        attention_inputs(packed, _model(bf16=True))


def test_pad_to_longest_cuts_after_the_longest_row_and_needs_pp1():
    from megatron_wmss.config import load_config
    from megatron_wmss.training.batches import trim_to_longest

    batch = {"tokens": torch.arange(12).view(2, 6), "segment_ids": torch.tensor([[1, 1, 0, 0, 0, 0], [1, 2, 2, 0, 0, 0]]),
             "sample_ids": ["a", "b"]}
    cut = trim_to_longest(batch)
    assert cut["tokens"].tolist() == [[0, 1, 2], [6, 7, 8]] and cut["sample_ids"] == ["a", "b"]
    assert trim_to_longest({"tokens": batch["tokens"]})["tokens"].shape == (2, 6)
    assert trim_to_longest(batch, multiple=2)["tokens"].shape == (2, 4)  # sequence parallel over 2 TP ranks
    assert trim_to_longest(batch, multiple=4)["tokens"].shape == (2, 4)
    assert trim_to_longest(batch, multiple=5)["tokens"].shape == (2, 5)
    assert load_config(overrides=["data.pad_to=longest"]).data.pad_to == "longest"
    with pytest.raises(ConfigError, match="data.pad_to"):
        load_config(overrides=["data.pad_to=longest", "parallel.pp=2"])
    with pytest.raises(ConfigError, match="data.pad_to"):
        load_config(overrides=["data.pad_to=shortest"])
