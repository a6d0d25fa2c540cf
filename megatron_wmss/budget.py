"""Training budgets in optimizer steps (`wmss run`, `wmss study`).

The paper states its budgets in epochs (App. E.5: Phase 1 = 1 SFT epoch of D, each WD-JT iteration =
1 epoch of D_active, the SFT baseline = 2 epochs of D). Epochs over sets of different sizes are not
equal budgets: D_active holds ~60% of D, so "1 + 1 epochs" of WMSS is fewer optimizer steps than "2
epochs" of SFT. Every budget is therefore resolved to a number of optimizer steps; the epoch rule is
only the default, and `wmss.step_matched` gives the baseline exactly WMSS's total.
"""

from __future__ import annotations

import math


def epoch_steps(epochs: float, num_samples: int, global_batch_size: int) -> int:
    """Optimizer steps of `epochs` passes over `num_samples` (the last batch reaches into the next epoch)."""
    return max(1, math.ceil(epochs * num_samples / global_batch_size))


def phase1_steps(cfg, num_samples: int) -> int:
    """Phase 1 SFT: `wmss.sft_steps`, else `wmss.sft_epochs` epochs of D."""
    w = cfg.wmss
    return w.sft_steps or epoch_steps(w.sft_epochs, num_samples, cfg.training.global_batch_size)


def wdjt_steps(cfg, active_size: int) -> int:
    """One WD-JT iteration: `wmss.wdjt_steps`, else 1 epoch of D_active."""
    return cfg.wmss.wdjt_steps or epoch_steps(1.0, active_size, cfg.training.global_batch_size)


def baseline_steps(cfg, num_samples: int, active_sizes: list[int] | None) -> int:
    """The SFT baseline: `wmss.baseline_steps`; with `wmss.step_matched` Phase 1 + every WD-JT
    iteration's steps (`active_sizes` are the K active-set sizes, needed unless `wmss.wdjt_steps` is
    set); else the epoch rule, sft_epochs + K epochs of D."""
    w = cfg.wmss
    if w.baseline_steps:
        return w.baseline_steps
    if not w.step_matched:
        return epoch_steps(w.sft_epochs + w.iterations, num_samples, cfg.training.global_batch_size)
    if w.wdjt_steps:
        return phase1_steps(cfg, num_samples) + w.iterations * w.wdjt_steps
    if active_sizes is None or len(active_sizes) != w.iterations:
        raise ValueError("wmss.step_matched: the baseline's steps include WD-JT's, which depend on the "
                         "active-set sizes; run `wmss run` (WMSS) first in the same run_dir, or set wmss.wdjt_steps")
    return phase1_steps(cfg, num_samples) + sum(wdjt_steps(cfg, n) for n in active_sizes)
