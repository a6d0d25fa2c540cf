"""Pieces shared by the vocab-parallel losses: the TP group, this rank's vocab range, chunking,
per-chunk row statistics and their merge across vocab blocks and TP ranks.

Every loss here works on per-token row statistics: a block of logits is reduced over (part of) the
vocabulary to a local maximum `m_r`, `s_r = sum exp(z - m_r)` (and a target logit or an entropy term).
Parts are combined with the online-softmax merge `M = max_r m_r`, `S = sum_r s_r * exp(m_r - M)`,
`lse = M + log S`: across vocab blocks locally, then across the TP group with one MAX and one SUM
all-reduce (each on `[k, tokens]` float64). So no pass needs the global maximum in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

IGNORE_INDEX = -100
# Default working-set size of one chunk's buffers; chunk_size=None picks the chunk length from it.
DEFAULT_CHUNK_BYTES = 256 * 2**20
MIN_CHUNK = 16
# Default chunk lengths are rounded down to a multiple of this: a GEMM whose output is a block of odd
# width (e.g. 21,845 vocab rows) is markedly slower on CPU than one of 21,760; tensor-core GEMMs on GPU
# prefer such multiples too.
CHUNK_ALIGN = 256


def resolve_tp_group(tp_group):
    """`tp_group` if given; else megatron's tensor-model-parallel group when torch.distributed and
    megatron parallel_state are initialized; else None (no reduction)."""
    if tp_group is not None:
        return tp_group
    if not (dist.is_available() and dist.is_initialized()):
        return None
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None
    return parallel_state.get_tensor_model_parallel_group()


@dataclass(frozen=True)
class VocabShard:
    """This rank's slice [start, start + size) of the (padded) vocabulary and the group that holds
    the other slices. Slices are contiguous and equal, rank-ordered (megatron's VocabUtility)."""

    group: Any
    world_size: int
    rank: int
    start: int
    size: int
    real: int  # rows of this slice below the unpadded vocabulary size (the rest is TP padding)

    @property
    def reduces(self) -> bool:
        return self.group is not None and self.world_size > 1

    def all_reduce_(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        if self.reduces:
            dist.all_reduce(tensor, op=op, group=self.group)
        return tensor


def vocab_shard(tp_group, local_vocab: int, vocab_size: int | None = None) -> VocabShard:
    """`vocab_size`: the unpadded vocabulary; rows at or above it (megatron's TP padding) are left out
    of the softmax, as if the model had no padding (None: every row is a real token)."""
    group = resolve_tp_group(tp_group)
    world, rank = (1, 0) if group is None else (dist.get_world_size(group), dist.get_rank(group))
    if rank < 0:
        raise ValueError("this process is not a member of tp_group")
    start = rank * local_vocab
    real = local_vocab if vocab_size is None else max(0, min(local_vocab, vocab_size - start))
    return VocabShard(group, world, rank, start, local_vocab, real)


# Statistics of a shard with no real rows: exp(m - M) = 0 and (m - M) * 0 = 0 stay finite (-inf would
# give NaN in the entropy merge).
EMPTY_MAX = -1e300


def check_lam(lam) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (wmss.lam) must be in [0, 1], got {lam}")
    return lam


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any input is float64 (gradcheck, references), else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def chunk_len(chunk_size: int | None, other_dim: int, bytes_per_elem: int) -> int:
    """Length of a chunk along the chunked dimension: `chunk_size`, or as many as fit
    DEFAULT_CHUNK_BYTES of [chunk, other_dim] working buffers (`bytes_per_elem` summed over them),
    rounded down to a multiple of CHUNK_ALIGN when that many fit."""
    if chunk_size is None:
        fit = DEFAULT_CHUNK_BYTES // max(1, other_dim * bytes_per_elem)
        return max(MIN_CHUNK, fit // CHUNK_ALIGN * CHUNK_ALIGN if fit >= CHUNK_ALIGN else fit)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def chunks(n: int, rows: int):
    for r0 in range(0, n, rows):
        yield r0, min(n, r0 + rows)


class Targets:
    """Labels of N tokens against this rank's vocab shard (megatron vocab_parallel_cross_entropy
    pattern): `valid` = not ignored, `local` = the label lies in this shard, `index` = its column in
    the shard (0 where not local), `local_w` = `local` as a float weight for scatter_add."""

    def __init__(self, labels: torch.Tensor, shard: VocabShard, dtype: torch.dtype):
        labels = labels.reshape(-1).long()
        self.valid = labels != IGNORE_INDEX
        self.local = (labels >= shard.start) & (labels < shard.start + shard.size)
        self.index = torch.where(self.local, labels - shard.start, torch.zeros_like(labels))
        self.local_w = self.local.to(dtype)


def _row_sum(e: torch.Tensor, exact: bool) -> torch.Tensor:
    """Row sums of a block of exponentials, in float64 when `exact`, else in the block's own dtype
    (torch's cascade reduction keeps fp32 sums to ~1e-7 relative). On CPU `sum(dtype=torch.float64)`
    first copies the whole [c, block] block to fp64, which costs about half of the block's GEMM; the
    fused kernels, whose error is their fp32 GEMM's anyway, sum in fp32."""
    return e.sum(dim=-1, dtype=torch.float64) if exact else e.sum(dim=-1)


def ce_chunk_stats(z: torch.Tensor, e: torch.Tensor, index: torch.Tensor, local: torch.Tensor,
                   m_out: torch.Tensor, s_out: torch.Tensor, t_out: torch.Tensor) -> None:
    """Row statistics of logits `z` [c, V/tp] for cross-entropy; `z` is overwritten. `e` (same shape,
    may be `z` itself) receives exp(z - m) in its own dtype: pass a float32 `e` next to a float64 `z`
    to take the max and the target logit exactly but the exponentials at float32 cost; the row sums
    are float64 when `z` is (the unfused kernel's exact path)."""
    m = z.amax(dim=-1)
    target = z.gather(1, index.unsqueeze(1)).squeeze(1)
    t_out.copy_(torch.where(local, target, torch.zeros_like(target)))
    m_out.copy_(m)
    z.sub_(m.unsqueeze(1))
    if e is not z:
        e.copy_(z)
    e.exp_()
    s_out.copy_(_row_sum(e, z.dtype == torch.float64))


def entropy_chunk_stats(z: torch.Tensor, e: torch.Tensor, m_out: torch.Tensor, s_out: torch.Tensor,
                        t_out: torch.Tensor) -> None:
    """Row statistics of logits `z` [c, V/tp] for entropy (Eq. 7): m, s = sum exp(z-m) and
    t = sum exp(z-m)*(z-m). `z` and `e` (a second buffer of the same shape and dtype) are overwritten."""
    m = z.amax(dim=-1)
    m_out.copy_(m)
    z.sub_(m.unsqueeze(1))
    torch.exp(z, out=e)
    exact = z.dtype == torch.float64
    s_out.copy_(_row_sum(e, exact))
    z.mul_(e)
    t_out.copy_(_row_sum(z, exact))


def merge_ce_(m, s, t, mb, sb, tb) -> None:
    """Fold one vocab block's CE statistics (mb, sb, tb) into the running (m, s, t), in place."""
    new_m = torch.maximum(m, mb)
    s.mul_(torch.exp(m - new_m)).add_(sb * torch.exp(mb - new_m))
    t.add_(tb)
    m.copy_(new_m)


def merge_entropy_(m, s, t, mb, sb, tb) -> None:
    """Fold one vocab block's entropy statistics into the running ones (the formula of
    reduce_entropy_stats, for two parts), in place."""
    new_m = torch.maximum(m, mb)
    a, b = torch.exp(m - new_m), torch.exp(mb - new_m)
    t.copy_(a * (t + (m - new_m) * s) + b * (tb + (mb - new_m) * sb))
    s.mul_(a).add_(sb * b)
    m.copy_(new_m)


def reduce_ce_stats(m, s, t, shard: VocabShard):
    """Merge per-rank CE statistics ([k, N] float64 each) -> (lse, target logit), both [k, N]."""
    if shard.reduces:
        global_m = shard.all_reduce_(m.clone(), dist.ReduceOp.MAX)
        both = torch.stack([s * torch.exp(m - global_m), t])
        shard.all_reduce_(both)
        m, (s, t) = global_m, both
    return m + torch.log(s), t


def mix_logits_(z: torch.Tensor, z_strong: torch.Tensor, z_weak: torch.Tensor, lam: float) -> torch.Tensor:
    """Paper Eq. 5, the mixed logits: z = lam * z_strong + (1 - lam) * z_weak, written into `z` in its
    dtype (`z` may be `z_strong` itself); lam in {0, 1} copies one input exactly."""
    if lam == 1.0:
        return z if z is z_strong else z.copy_(z_strong)
    if lam == 0.0:
        return z.copy_(z_weak)
    if z is not z_strong:
        z.copy_(z_strong)
    return z.mul_(lam).add_(z_weak, alpha=1.0 - lam)


def cross_entropy_from_stats(m, s, t, shard: VocabShard, targets: Targets, shape, out_dtype):
    """Paper Eq. 6 per token, CE = logsumexp(z) - z[label] (0 at ignored labels), from this rank's
    row statistics ([k, N] float64: k logit sets, e.g. the mix and each model) merged over TP.
    Returns k tensors of `shape` in `out_dtype`, and the [k, N] log-sum-exp for backward."""
    lse, target = reduce_ce_stats(m, s, t, shard)
    losses = [torch.where(targets.valid, lse[j] - target[j], torch.zeros_like(lse[j])).to(out_dtype).view(shape)
              for j in range(lse.shape[0])]
    return losses, lse


def reduce_entropy_stats(m, s, t, shard: VocabShard):
    """Merge per-rank entropy statistics -> H = log S - T/S with S, T taken about the global max:
    T = sum_r exp(m_r - M) * (t_r + (m_r - M) * s_r)."""
    if shard.reduces:
        global_m = shard.all_reduce_(m.clone(), dist.ReduceOp.MAX)
        scale = torch.exp(m - global_m)
        both = torch.stack([s * scale, (t + (m - global_m) * s) * scale])
        shard.all_reduce_(both)
        s, t = both
    return torch.log(s) - t / s


def scaled_copy_(dst: torch.Tensor, src: torch.Tensor, scale: float, tmp: torch.Tensor | None) -> None:
    """dst = scale * src, computed in src's dtype and rounded once to dst's dtype (`tmp`: a buffer
    shaped like src, needed only when the dtypes differ)."""
    if dst.dtype == src.dtype:
        torch.mul(src, scale, out=dst)
    else:
        torch.mul(src, scale, out=tmp)
        dst.copy_(tmp)
