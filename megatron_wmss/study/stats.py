"""Statistics of a study: per-arm means with 95% confidence intervals over seeds, and paired differences
to the `sft` arm with a bootstrap over problems x seeds.

A model's result is its per-problem score on each benchmark (`Scores`: benchmark -> array over the
benchmark's problems in a fixed id order; the score is the share of correct samples, 0/1 for greedy).
Its accuracy is the mean over benchmarks of the per-benchmark accuracy (the paper's Math-Avg; with one
benchmark simply the accuracy), in percent.
"""

from __future__ import annotations

import numpy as np

Scores = dict  # benchmark name -> np.ndarray of per-problem scores in [0, 1]

BOOTSTRAP_SAMPLES = 2000


def accuracy(scores: Scores) -> float:
    """Math-Avg in percent: the mean of the per-benchmark accuracies."""
    return float(100.0 * np.mean([np.mean(v) for v in scores.values()]))


def _t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def _resampled_problems(rng: np.random.Generator, scores: Scores) -> dict:
    """One bootstrap draw of problem indices per benchmark (stratified: each benchmark keeps its size)."""
    return {b: rng.integers(0, len(v), len(v)) for b, v in scores.items()}


def _check_aligned(a: Scores, b: Scores) -> None:
    if a.keys() != b.keys() or any(len(a[k]) != len(b[k]) for k in a):
        raise ValueError("paired scores must cover the same benchmarks and problems")


def bootstrap_accuracy_ci(scores: Scores, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """95% percentile interval of the accuracy under resampling of problems (one model, one seed)."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        idx = _resampled_problems(rng, scores)
        draws.append(accuracy({b: v[idx[b]] for b, v in scores.items()}))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def seed_mean_ci(per_seed: dict, scores: dict | None = None) -> tuple[float, list[float]]:
    """(mean, 95% CI) of an arm's accuracies over seeds: Student's t interval for >= 2 seeds; with one
    seed the bootstrap over problems of that seed's scores (`scores`: seed -> Scores)."""
    values = np.array(list(per_seed.values()), dtype=np.float64)
    mean = float(values.mean())
    if len(values) == 1:
        if scores is None:
            raise ValueError("a single seed needs its per-problem scores for the bootstrap interval")
        return mean, bootstrap_accuracy_ci(next(iter(scores.values())))
    half = _t_quantile(len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, [mean - float(half), mean + float(half)]


def paired_difference(arm: dict, reference: dict, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Mean over seeds of accuracy(arm) - accuracy(reference) (percentage points), with a 95% percentile
    interval from a two-level bootstrap: seeds resampled with replacement, then, within each drawn seed,
    the problems (the same draw for both models: the comparison is paired). `arm` and `reference` map
    seed -> Scores; only the seeds both have are used."""
    seeds = sorted(set(arm) & set(reference), key=str)
    if not seeds:
        raise ValueError("no seed in common with the reference arm")
    for s in seeds:
        _check_aligned(arm[s], reference[s])
    diffs = [accuracy(arm[s]) - accuracy(reference[s]) for s in seeds]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        chosen = rng.integers(0, len(seeds), len(seeds)) if len(seeds) > 1 else [0]
        total = 0.0
        for k in chosen:
            a, r = arm[seeds[k]], reference[seeds[k]]
            idx = _resampled_problems(rng, a)
            total += accuracy({b: a[b][idx[b]] for b in a}) - accuracy({b: r[b][idx[b]] for b in r})
        draws.append(total / len(chosen))
    return {"mean_diff": float(np.mean(diffs)),
            "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]}
