"""Budgets in optimizer steps (megatron_wmss/budget.py) and per-phase data order (training.data_phase)."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_wmss import budget
from megatron_wmss.config import ConfigError, load_config
from megatron_wmss.data import epoch_permutation
from megatron_wmss.training.batches import ActiveSubset, GlobalBatchSchedule


def _cfg(*overrides):
    return load_config(overrides=["training.global_batch_size=8", *overrides])


def test_the_epoch_rule_is_the_default():
    cfg = _cfg()
    assert budget.phase1_steps(cfg, 2000) == 250  # 1 epoch of D
    assert budget.wdjt_steps(cfg, 1222) == 153  # 1 epoch of D_active
    assert budget.baseline_steps(cfg, 2000, None) == 500  # sft_epochs + K = 2 epochs of D


def test_explicit_steps_override_the_epoch_rule():
    cfg = _cfg("wmss.sft_steps=300", "wmss.wdjt_steps=120", "wmss.baseline_steps=999")
    assert (budget.phase1_steps(cfg, 2000), budget.wdjt_steps(cfg, 1222)) == (300, 120)
    assert budget.baseline_steps(cfg, 2000, [1222]) == 999


def test_step_matched_baseline_equals_phase1_plus_every_wdjt_iteration():
    cfg = _cfg("wmss.step_matched=true", "wmss.iterations=2")
    assert budget.baseline_steps(cfg, 2000, [1222, 1000]) == 250 + 153 + 125
    with pytest.raises(ValueError, match="wdjt_steps"):
        budget.baseline_steps(cfg, 2000, None)  # the WD-JT steps are not known yet
    fixed = _cfg("wmss.step_matched=true", "wmss.iterations=2", "wmss.wdjt_steps=100", "wmss.sft_steps=40")
    assert budget.baseline_steps(fixed, 2000, None) == 240


def test_step_matched_and_an_explicit_baseline_conflict():
    with pytest.raises(ConfigError, match="wmss.step_matched"):
        _cfg("wmss.step_matched=true", "wmss.baseline_steps=10")
    with pytest.raises(ConfigError, match="wmss.weak"):
        _cfg("wmss.weak=phase1_step:0")


class _Data:
    """A dataset of n items whose order comes from epoch_permutation, like SFTDataset."""

    def __init__(self, n, seed=3):
        self.n, self.seed = n, seed
        self.sample_ids = [f"s{i}" for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"sample_id": self.sample_ids[i]}

    def index_of(self, sid):
        return self.sample_ids.index(sid)

    def epoch_order(self, epoch, phase=0):
        return epoch_permutation(self.n, self.seed, epoch, phase)


def _stream(dataset, phase, steps=6):
    schedule = GlobalBatchSchedule(dataset, global_batch_size=4, micro_batch_size=1, dp_size=1, dp_rank=0,
                                   train_iters=steps, phase=phase)
    return [i for step in range(steps) for i in schedule.rank_samples(step)]


def test_consecutive_phases_over_the_same_data_do_not_replay_the_order():
    data = _Data(12)
    phase1, phase2 = _stream(data, 0), _stream(data, 1)
    assert sorted(phase1[:12]) == sorted(phase2[:12]) == list(range(12))  # both are epochs of the same data
    assert phase1[:12] != phase2[:12] and phase1[12:] != phase2[12:]  # ... in other orders, every epoch
    assert _stream(data, 1) == phase2  # deterministic for (seed, phase, epoch)
    # an active subset (WD-JT of iteration t = phase t) also draws its own order
    active = ActiveSubset(data, data.sample_ids[:8])
    assert active.epoch_order(0, 1).tolist() != active.epoch_order(0, 0).tolist()
    assert epoch_permutation(12, 3, 0).tolist() == np.random.default_rng([3, 0]).permutation(12).tolist()


def test_pipeline_phases_get_their_own_data_order(tmp_path):
    from megatron_wmss.pipeline import _phase_config

    cfg = _cfg()
    phase1 = _phase_config(cfg, "sft", 250, tmp_path / "p1", phase=0)
    wdjt = _phase_config(cfg, "wmss", 153, tmp_path / "w1", phase=1, export_steps=[7])
    assert (phase1.training.train_iters, phase1.training.data_phase) == (250, 0)
    assert (wdjt.training.train_iters, wdjt.training.data_phase, wdjt.training.export_steps) == (153, 1, [7])
    assert cfg.training.data_phase == 0 and cfg.training.train_iters is None  # the recipe is not modified


def test_wmss_run_refuses_a_global_train_iters(tmp_path):
    """`wmss run` sets every phase's steps; a recipe-wide training.train_iters would be silently ignored."""
    from megatron_wmss.commands.run import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  hf_path: {tmp_path}\ndata:\n  path: {tmp_path / 'd'}\n")
    with pytest.raises(ConfigError, match="training.train_iters"):
        main(["--config", str(recipe), "training.train_iters=5"])
    with pytest.raises(ConfigError, match="wmss.sft_steps"):
        main(["--config", str(recipe), "training.epochs=2"])
