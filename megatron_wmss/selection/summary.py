"""From per-sample entropies to the active set: weights (Eq. 9), draw, files and a readable summary.

Writes into the selection directory: `active_set.txt` (sample ids, one per line; repeated ids kept
in draw order when dedupe is off), `summary.json`, and `entropy_hist.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megatron_wmss.selection.weights import (TERM_NAMES, entropy_gap, sample_active_set, selection_terms,
                                             weights_from_terms)

# App. B.5: mixing adds little when weak and strong are nearly equally uncertain. Warn when the mean
# |dH| is below this fraction of the mean strong entropy.
SEPARATION_WARNING_RATIO = 0.05
# Below this coefficient of variation of p_i*N the Eq. 9 weights are close to uniform, and the draw is
# in effect uniform random sampling of ~63% of D (1 - 1/e distinct samples from N draws).
UNIFORM_WARNING_CV = 0.25


def weight_spread(weights: np.ndarray) -> dict:
    """How far the sampling distribution is from uniform: p_i*N (1 everywhere when uniform), its
    coefficient of variation, and the effective sample size (sum p)^2 / sum p^2 as a fraction of N."""
    scaled = np.asarray(weights, dtype=np.float64) * len(weights)
    ess = weights.sum() ** 2 / np.square(weights).sum()
    return {"weight_cv": float(scaled.std() / scaled.mean()), "weight_min": float(scaled.min()),
            "weight_max": float(scaled.max()), "ess_fraction": float(ess / len(weights))}


def _stats(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(values.max())}


def select_active_set(scores: dict[str, dict], sample_ids: list[str], selection_cfg, seed: int) -> dict:
    """Weights (Eq. 9, `selection_cfg.selection_formula`), draw and diagnostics for the samples in
    `sample_ids` order (all must be scored); the summary's per-term shares are the draw's own terms."""
    missing = [sid for sid in sample_ids if sid not in scores]
    if missing:
        raise ValueError(f"{len(missing)} samples have no entropy score (first: {missing[0]})")
    hs = np.array([scores[sid]["h_strong"] for sid in sample_ids])
    hw = np.array([scores[sid]["h_weak"] for sid in sample_ids])
    c, formula = selection_cfg, selection_cfg.selection_formula
    terms = selection_terms(hs, hw, c.alpha, c.beta, c.gamma, formula=formula)  # what the draw uses
    weights = weights_from_terms(terms)
    drawn = sample_active_set(weights, c.num_draws, seed=seed, dedupe=c.dedupe)
    delta = entropy_gap(hs, hw)
    names = TERM_NAMES[formula]
    dominant = np.bincount(terms.argmax(axis=0), minlength=3) / len(sample_ids)
    separation = float(np.abs(delta).mean() / max(hs.mean(), 1e-12))
    summary = {
        "num_samples": len(sample_ids), "num_draws": int(c.num_draws or len(sample_ids)),
        "dedupe": c.dedupe, "formula": formula, "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
        "seed": seed, "active_set_size": int(len(drawn)),
        "selected_fraction": float(len(np.unique(drawn)) / len(sample_ids)),
        "entropy_strong": _stats(hs), "entropy_weak": _stats(hw), "delta_h": _stats(delta),
        "share_weak_more_uncertain": float((delta < 0).mean()),  # [-dH]_+ > 0
        "share_strong_more_uncertain": float((delta > 0).mean()),  # [dH]_+ > 0
        "share_dominant_term": dict(zip(names, dominant.astype(float).tolist())),
        "mass_per_term": dict(zip(names, (terms.sum(axis=1) / terms.sum()).tolist())),
        "separation": separation,
        **weight_spread(weights),
        "warnings": [],
    }
    if summary["weight_cv"] < UNIFORM_WARNING_CV:
        summary["warnings"].append(
            f"the selection weights are nearly uniform (p_i*N in [{summary['weight_min']:.2f}, "
            f"{summary['weight_max']:.2f}], coefficient of variation {summary['weight_cv']:.3f}): the draw is "
            "then close to uniform random sampling; consider a weaker/earlier weak model (wmss.weak=phase1_step:N)")
    if separation < SEPARATION_WARNING_RATIO:
        summary["warnings"].append(
            f"weak and strong entropies are close (mean |dH| = {separation:.3f} x mean H_strong): the "
            "mixed logits add little signal (paper App. B.5); consider a weaker M_(t-1) or more Phase-1 SFT")
    return {"ids": [sample_ids[i] for i in drawn], "weights": weights, "summary": summary, "h_strong": hs,
            "h_weak": hw}


def write_selection(out_dir: str | Path, selection: dict) -> None:
    """active_set.txt (atomic), summary.json and entropy_hist.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _histogram(out_dir / "entropy_hist.png", selection["h_strong"], selection["h_weak"])
    (out_dir / "summary.json").write_text(json.dumps(selection["summary"], indent=1))
    tmp = out_dir / "active_set.txt.tmp"
    tmp.write_text("".join(sid + "\n" for sid in selection["ids"]))
    tmp.replace(out_dir / "active_set.txt")


def _histogram(path: Path, hs: np.ndarray, hw: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    bins = np.linspace(0, max(hs.max(), hw.max()) * 1.05 + 1e-9, 40)
    left.hist(hw, bins=bins, alpha=0.6, label="weak M_(t-1)")
    left.hist(hs, bins=bins, alpha=0.6, label="strong M_t")
    left.set_xlabel("token-averaged entropy (Eq. 7)")
    left.legend()
    right.hist(hs - hw, bins=40, color="gray")
    right.set_xlabel("dH = H_strong - H_weak (Eq. 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
