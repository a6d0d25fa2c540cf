"""Per-position logit statistics of the paper's mechanism diagnostics (App. B.4, Tables 6-7; App. D),
computed vocab-parallel from final hidden states and this rank's output-weight shard, and their
aggregation over the supervised positions of a data sample.

At a supervised position with logits z over the (unpadded) vocabulary V and target y:

  target logit        z[y]                                               (Table 6, z_target)
  distractor mean     (sum_k z[k] - z[y]) / (|V| - 1): every non-target token (Table 6, z_bg)
  gap                 z[y] - distractor mean                             (Table 6, Delta_gap)
  logit mean          sum_k z[k] / |V|                                   (Table 7, z_mean)
  logit std           sqrt(sum_k (z[k] - mean)^2 / |V|), population std  (Tables 6-7, sigma)
  centered norm       ||z - mean 1||_2 = sqrt(|V|) * std                  (App. D, Eq. 48)
  L2 norm             ||z||_2                                            (Table 7)
  entropy             H(softmax z), nats                                 (Table 7, as Eq. 7)
  max prob            max_k softmax(z)[k]                                (Table 7)
  max / min logit     max_k z[k], min_k z[k]                             (Table 7)

Each is averaged over all supervised positions of the sample (every position weighs the same): the
issue's pinned keys are means over supervised positions, `max_logit` / `min_logit` included. The
extremes over all positions and tokens are reported too, as `max_logit_extreme` / `min_logit_extreme`:
Table 7's max/min values (43.25, 48.75, 60.50, -24.00, -26.63, -35.75) are all bf16-representable, as
single logits are and a mean over thousands of positions almost never is, so the paper may have meant
extremes. TP padding rows of the output layer are no tokens: they are in no sum, maximum or softmax.
Table 7's "mean logit" is also reported (`logit_mean`).

Why not megatron-core: it has no vocab-parallel statistics besides the cross-entropy. Each rank reduces
its shard to per-position partial sums, maxima and the online-softmax parts of losses/_common.py; one
MAX and one SUM all-reduce over the TP group (on `[k, positions]` float64) merge them. No rank ever
holds more than a `[chunk, V/tp]` block of logits.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from megatron_wmss.losses._common import EMPTY_MAX, Targets, chunk_len, chunks, entropy_chunk_stats, vocab_shard

# Keys of one model's statistics in diagnose.json, in table order (the first ten are pinned).
MEAN_KEYS = ("target_logit_mean", "distractor_logit_mean", "gap", "logit_std", "centered_norm", "l2_norm",
             "entropy", "max_prob", "logit_mean", "max_logit", "min_logit")
EXTREME_KEYS = ("max_logit_extreme", "min_logit_extreme")


@torch.no_grad()
def position_statistics(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, *, vocab_size: int | None = None,
                        tp_group=None, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """The module docstring's statistics of each of N positions, float64 `[N]` tensors keyed like
    MEAN_KEYS (with `max_logit` / `min_logit` per position), from hidden states `[N, h]`, this rank's
    output weight shard `[V/tp, h]` and the global target ids `[N]`. Logits are formed in the weight's
    dtype (what the output layer computes) and reduced in float64. Identical on every TP rank."""
    n = labels.numel()
    shard = vocab_shard(tp_group, w.shape[0], vocab_size)
    real = shard.real
    vocab = shard.size * shard.world_size if vocab_size is None else vocab_size
    if vocab < 2:
        raise ValueError("logit statistics need a vocabulary of at least 2 tokens")
    targets = Targets(labels, shard, torch.float64)
    rows = chunk_len(chunk_size, max(real, 1), 4 * 8)
    parts = torch.zeros(5, n, dtype=torch.float64, device=h.device)  # sum z, sum z^2, z[y], S, T
    extremes = torch.full((2, n), EMPTY_MAX, dtype=torch.float64, device=h.device)  # max z, -min z
    m, s, t = (torch.zeros(n, dtype=torch.float64, device=h.device) for _ in range(3))
    m.fill_(EMPTY_MAX)
    for r0, r1 in chunks(n if real else 0, rows):
        z = (h[r0:r1] @ w[:real].t()).double()
        parts[0, r0:r1] = z.sum(dim=-1)
        parts[1, r0:r1] = (z * z).sum(dim=-1)
        target = z.gather(1, targets.index[r0:r1].unsqueeze(1)).squeeze(1)
        parts[2, r0:r1] = torch.where(targets.local[r0:r1], target, torch.zeros_like(target))
        extremes[1, r0:r1] = -z.amin(dim=-1)
        entropy_chunk_stats(z, torch.empty_like(z), m[r0:r1], s[r0:r1], t[r0:r1])
    extremes[0] = m
    shard.all_reduce_(extremes, dist.ReduceOp.MAX)
    top = extremes[0]
    # The online-softmax merge of losses/_common.reduce_entropy_stats, about the global maximum `top`,
    # in the same SUM all-reduce as the other sums.
    scale = torch.exp(m - top)
    parts[3] = s * scale
    parts[4] = (t + (m - top) * s) * scale
    shard.all_reduce_(parts)
    total, squares, target, sum_exp, weighted = parts
    mean = total / vocab
    centered_sq = (squares - total * mean).clamp_min(0.0)
    distractor = (total - target) / (vocab - 1)
    return {"target_logit_mean": target, "distractor_logit_mean": distractor, "gap": target - distractor,
            "logit_std": torch.sqrt(centered_sq / vocab), "centered_norm": torch.sqrt(centered_sq),
            "l2_norm": torch.sqrt(squares), "entropy": torch.log(sum_exp) - weighted / sum_exp,
            "max_prob": 1.0 / sum_exp, "logit_mean": mean, "max_logit": top, "min_logit": -extremes[1]}


class StatisticsAccumulator:
    """Sums of the per-position statistics over the positions seen (and their extremes), merged over
    ranks with `all_reduce`; `summary()` gives one model's dict of diagnose.json."""

    def __init__(self, device=None):
        self.sums = torch.zeros(len(MEAN_KEYS) + 1, dtype=torch.float64, device=device)  # + position count
        self.extremes = torch.full((2,), EMPTY_MAX, dtype=torch.float64, device=device)  # max, -min

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        n = stats["target_logit_mean"].numel()
        if n == 0:
            return
        self.sums[:-1] += torch.stack([stats[k].sum() for k in MEAN_KEYS])
        self.sums[-1] += n
        self.extremes = torch.maximum(self.extremes, torch.stack([stats["max_logit"].max(), -stats["min_logit"].min()]))

    def all_reduce(self, group=None) -> None:
        """Merge every rank's accumulator; a rank that saw no position contributes nothing."""
        dist.all_reduce(self.sums, group=group)
        dist.all_reduce(self.extremes, op=dist.ReduceOp.MAX, group=group)

    def summary(self) -> dict:
        count = float(self.sums[-1])
        if count == 0:
            raise ValueError("no supervised position in the diagnosed samples")
        out = {k: float(v) / count for k, v in zip(MEAN_KEYS, self.sums[:-1].tolist())}
        out.update(max_logit_extreme=float(self.extremes[0]), min_logit_extreme=-float(self.extremes[1]),
                   positions=int(count))
        return out


def lambda_cross(weak_centered_norm: float, strong_centered_norm: float) -> tuple[float, float]:
    """(alpha, lambda_cross): the sensitivity ratio alpha = (||z~_strong|| / ||z~_weak||)^2 of the
    centered-norm proxy (App. D, Eq. 16; the strong model before WD-JT, the weak model WD-JT starts
    from) and the gradient-share crossover lambda_cross = 1 / (1 + sqrt(alpha)) (Eq. 17 / Eq. 63).
    The paper's 1240.10 vs 1191.33 give alpha = 1.08, lambda_cross = 0.490."""
    if not (weak_centered_norm > 0 and strong_centered_norm > 0):
        raise ValueError("centered norms must be > 0")
    alpha = (strong_centered_norm / weak_centered_norm) ** 2
    return alpha, 1.0 / (1.0 + math.sqrt(alpha))


def entropy_separation(weak_entropy: float, strong_entropy: float) -> float:
    """Delta H = H_weak - H_strong (App. B.5): mean per-position predictive entropy of the weak model
    minus that of the strong model on the same positions, nats (> 0 when the weak model is less sure)."""
    return weak_entropy - strong_entropy
