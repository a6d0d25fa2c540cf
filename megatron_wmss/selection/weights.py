"""WD-DS sampling weights (paper Eq. 8-9) and the active-set draw (Section 4.2, Algorithm 1 lines 5-10)."""

from __future__ import annotations

import numpy as np

def _validate(h_strong, h_weak, alpha, beta, gamma) -> tuple[np.ndarray, np.ndarray]:
    hs = np.asarray(h_strong, dtype=np.float64)
    hw = np.asarray(h_weak, dtype=np.float64)
    if hs.ndim != 1 or hw.ndim != 1:
        raise ValueError(f"entropies must be 1-D arrays, got shapes {hs.shape} and {hw.shape}")
    if hs.shape != hw.shape:
        raise ValueError(f"mismatched lengths: {hs.size} strong vs {hw.size} weak entropies")
    if hs.size == 0:
        raise ValueError("no samples: entropy arrays are empty")
    for name, h in (("strong", hs), ("weak", hw)):
        if not np.isfinite(h).all():
            raise ValueError(f"non-finite {name} entropy at sample {int(np.flatnonzero(~np.isfinite(h))[0])}")
        if (h < 0).any():
            raise ValueError(f"negative {name} entropy {h.min()} at sample {int(np.argmin(h))}")
    for name, coef in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not np.isfinite(coef) or coef < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {coef}")
    return hs, hw


def _normalized(term: np.ndarray) -> np.ndarray:
    total = term.sum()
    return term / total if total > 0 else np.zeros_like(term)


# The three Eq. 9 terms of each formula, in `selection_terms` order (summary.json names them so).
TERM_NAMES = {"paper": ("alpha[-dH]+", "beta*H_strong", "gamma[dH]+"),
              "reference": ("alpha*H_weak", "beta[-dH]+", "gamma[dH]+")}
FORMULAS = tuple(TERM_NAMES)


def entropy_gap(h_strong, h_weak) -> np.ndarray:
    """Paper Eq. 8: dH_i = H_strong_i - H_weak_i (positive where the strong model is more uncertain)."""
    return np.asarray(h_strong, dtype=np.float64) - np.asarray(h_weak, dtype=np.float64)


def selection_terms(h_strong, h_weak, alpha: float = 0.1, beta: float = 0.8, gamma: float = 0.1,
                    formula: str = "paper") -> np.ndarray:
    """The three weighted terms of the sampling weight per sample, `[3, N]` float64, named by
    `TERM_NAMES[formula]`; their sum over the first axis is the unnormalized weight.

    "paper" (Eq. 9): alpha * [-dH_i]_+ , beta * H_strong_i , gamma * [dH_i]_+
    "reference" (the public reference code): each term normalized separately, the WEAK entropy as the
        difficulty term: alpha * H_weak/sum(H_weak) , beta * [-dH]_+/sum([-dH]_+) , gamma * [dH]_+/sum([dH]_+)
        (a term whose sum is 0 contributes nothing).
    """
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {FORMULAS}, got {formula!r}")
    hs, hw = _validate(h_strong, h_weak, alpha, beta, gamma)
    delta = entropy_gap(hs, hw)
    if formula == "paper":
        return np.stack([alpha * np.maximum(-delta, 0.0), beta * hs, gamma * np.maximum(delta, 0.0)])
    return np.stack([alpha * _normalized(hw), beta * _normalized(np.maximum(-delta, 0.0)),
                     gamma * _normalized(np.maximum(delta, 0.0))])


def selection_weights(h_strong, h_weak, alpha: float = 0.1, beta: float = 0.8, gamma: float = 0.1,
                      formula: str = "paper") -> np.ndarray:
    """Sampling distribution over samples (float64, sums to 1): the `selection_terms` summed, normalized
    (paper Eq. 9: p_i ∝ alpha [-dH_i]_+ + beta H_strong_i + gamma [dH_i]_+)."""
    return weights_from_terms(selection_terms(h_strong, h_weak, alpha, beta, gamma, formula))


def weights_from_terms(terms: np.ndarray) -> np.ndarray:
    """The sampling distribution from `selection_terms`: their sum per sample, normalized to 1."""
    raw = terms.sum(axis=0)
    total = raw.sum()
    if not total > 0:
        raise ValueError("all selection weights are zero (entropies and coefficients give no mass)")
    return raw / total


def sample_active_set(weights, num_draws: int | None = None, seed: int = 0, dedupe: bool = True) -> np.ndarray:
    """Draw `num_draws` (default len(weights)) sample indices with replacement from `weights`.

    dedupe=True: the sorted unique indices (the paper's D_active); dedupe=False: the multiset in draw
    order (the reference code's schedule). Same seed, same result (numpy PCG64).
    """
    p = np.asarray(weights, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("weights must be finite and >= 0")
    if not p.sum() > 0:
        raise ValueError("all weights are zero")
    n = p.size if num_draws is None else int(num_draws)
    if n < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    draws = np.random.default_rng(seed).choice(p.size, size=n, replace=True, p=p / p.sum())
    return np.unique(draws).astype(np.int64) if dedupe else draws.astype(np.int64)
