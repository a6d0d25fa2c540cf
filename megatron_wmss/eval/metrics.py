"""pass@k (unbiased estimator of Chen et al. 2021), per-benchmark summaries and the Math-Avg."""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` correct out of `n` samples: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n={n} samples per problem)")
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of pass@k over problems given (n, c) per problem."""
    if not counts:
        raise ValueError("no problems to average")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def summarize_benchmark(records: Iterable[Mapping], ks: Sequence[int] = (1,)) -> dict:
    """Summary of one benchmark from its per-sample records (keys: id, correct, reason, finish_reason).

    pass@1 is the mean over problems of c/n (greedy accuracy when n == 1, mean@n otherwise); pass@k is
    reported for every k in `ks` with k <= n. Every problem must have the same number of samples."""
    per_problem: dict[str, list[bool]] = {}
    reasons: Counter = Counter()
    truncated = 0
    for r in records:
        per_problem.setdefault(str(r["id"]), []).append(bool(r["correct"]))
        reasons[r["reason"]] += 1
        truncated += r.get("finish_reason") == "length"
    if not per_problem:
        raise ValueError("no samples to summarize")
    sizes = {len(v) for v in per_problem.values()}
    if len(sizes) != 1:
        raise ValueError(f"problems have different sample counts {sorted(sizes)}; resume the evaluation first")
    n = sizes.pop()
    counts = [(n, sum(v)) for v in per_problem.values()]
    return {
        "problems": len(counts),
        "samples_per_problem": n,
        "pass@1": 100.0 * mean_pass_at_k(counts, 1),
        "pass@k": {str(k): 100.0 * mean_pass_at_k(counts, k) for k in sorted(set(ks)) if k <= n},
        "reasons": dict(sorted(reasons.items())),
        "truncated": truncated,
    }


def math_avg(per_benchmark: Mapping[str, Mapping]) -> float | None:
    """Unweighted mean of pass@1 (in %) over the benchmarks given (the paper's 'Avg.' over its seven)."""
    values = [b["pass@1"] for b in per_benchmark.values()]
    return sum(values) / len(values) if values else None
