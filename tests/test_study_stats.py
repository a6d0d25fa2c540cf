"""Study statistics (megatron_wmss/study/stats.py) against direct computations, and the WD-DS weight spread."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_wmss.selection.summary import weight_spread
from megatron_wmss.study import stats


def test_accuracy_is_the_mean_of_benchmark_accuracies():
    scores = {"a": np.array([1.0, 0.0, 0.0, 0.0]), "b": np.array([1.0, 1.0])}
    assert stats.accuracy(scores) == pytest.approx(100 * (0.25 + 1.0) / 2)


def test_seed_interval_is_students_t():
    values = {"1": 40.0, "2": 44.0, "3": 45.0}
    mean, (lo, hi) = stats.seed_mean_ci(values)
    x = np.array([40.0, 44.0, 45.0])
    half = 4.302652729911275 * x.std(ddof=1) / np.sqrt(3)  # t(0.975, df=2)
    assert mean == pytest.approx(x.mean()) and (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half))


def test_single_seed_interval_is_a_bootstrap_over_problems():
    scores = {"t": np.array([1.0] * 30 + [0.0] * 70)}
    mean, (lo, hi) = stats.seed_mean_ci({"1": 30.0}, {"1": scores})
    se = 100 * np.sqrt(0.3 * 0.7 / 100)
    assert mean == 30.0 and lo < 30.0 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal approximation's width
    with pytest.raises(ValueError):
        stats.seed_mean_ci({"1": 30.0})


def test_paired_difference():
    rng = np.random.default_rng(0)
    ref = {str(s): {"t": (rng.random(400) < 0.5).astype(float)} for s in range(3)}
    same = stats.paired_difference(ref, ref)
    assert same == {"mean_diff": 0.0, "ci95": [0.0, 0.0]}  # paired: identical answers give no spread
    better = {s: {"t": np.maximum(v["t"], (np.arange(400) < 40).astype(float))} for s, v in ref.items()}
    diff = stats.paired_difference(better, ref)
    want = np.mean([stats.accuracy(better[s]) - stats.accuracy(ref[s]) for s in ref])
    assert diff["mean_diff"] == pytest.approx(want) and 0 < diff["ci95"][0] <= want <= diff["ci95"][1]
    with pytest.raises(ValueError):
        stats.paired_difference({"0": {"t": np.ones(3)}}, {"0": {"t": np.ones(4)}})


def test_weight_spread():
    uniform = weight_spread(np.full(10, 0.1))
    assert uniform == pytest.approx({"weight_cv": 0.0, "weight_min": 1.0, "weight_max": 1.0, "ess_fraction": 1.0})
    p = np.array([0.5, 0.5] + [0.0] * 8)  # two samples carry all the mass
    spread = weight_spread(p)
    assert spread["ess_fraction"] == pytest.approx(0.2) and spread["weight_max"] == pytest.approx(5.0)
    assert spread["weight_cv"] == pytest.approx(np.std(p * 10) / np.mean(p * 10))


def test_near_uniform_weights_warn():
    from types import SimpleNamespace

    from megatron_wmss.selection.summary import select_active_set

    ids = [f"s{i}" for i in range(50)]
    cfg = SimpleNamespace(alpha=0.1, beta=0.8, gamma=0.1, selection_formula="paper", num_draws=None, dedupe=True)
    flat = {sid: {"h_strong": 1.0 + 0.01 * (i % 3), "h_weak": 2.0} for i, sid in enumerate(ids)}
    summary = select_active_set(flat, ids, cfg, seed=0)["summary"]
    assert summary["weight_cv"] < 0.05 and any("nearly uniform" in w for w in summary["warnings"])
    spread = {sid: {"h_strong": 0.05 + 2.0 * (i % 5 == 0), "h_weak": 2.0} for i, sid in enumerate(ids)}
    summary = select_active_set(spread, ids, cfg, seed=0)["summary"]
    assert summary["weight_cv"] > 1.0 and not any("nearly uniform" in w for w in summary["warnings"])
