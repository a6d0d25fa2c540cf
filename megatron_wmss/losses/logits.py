"""Vocab-parallel mixed-logit cross-entropy (paper Eq. 5-6) and entropy (Eq. 7) on materialized
logit shards `[s, b, V/tp]`.

Why not megatron-core's `tensor_parallel.vocab_parallel_cross_entropy`: it takes one logit tensor,
so the mix `lam*z_s + (1-lam)*z_w` would have to be materialized in fp32 as a third `[tokens, V/tp]`
tensor, and it keeps the fp32 softmax alive from forward to backward. Here the mix is formed chunk by
chunk inside the kernel, nothing `[tokens, V/tp]`-sized is saved (backward recomputes the chunk from
the saved inputs and the per-token log-sum-exp), and one autograd node hands `lam*g` and `(1-lam)*g`
to the two inputs. Megatron-core has no vocab-parallel entropy.
"""

from __future__ import annotations

import torch

from megatron_wmss.losses._common import (
    Targets,
    VocabShard,
    ce_chunk_stats,
    check_lam,
    cross_entropy_from_stats,
    chunk_len,
    chunks,
    compute_dtype,
    entropy_chunk_stats,
    mix_logits_,
    reduce_entropy_stats,
    scaled_copy_,
    vocab_shard,
)


def _mix_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 (and fp64) logits are mixed in fp64: in fp32 the mix rounds at eps*|z|, which at logits of
    magnitude 100+ moves softmax probabilities by ~1e-5 relative; bf16/fp16 logits (8-11 bit
    mantissas) are mixed in fp32, whose rounding is far below their own resolution."""
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


class _MixedLogitCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zs, zw, labels, lam: float, shard: VocabShard, rows: int, diagnostics: bool):
        vocab = zs.shape[-1]
        n = labels.numel()
        zs2, zw2 = zs.reshape(n, vocab), zw.reshape(n, vocab)
        cdt = compute_dtype(zs.dtype, zw.dtype)
        mdt = _mix_dtype(torch.promote_types(zs.dtype, zw.dtype))
        tg = Targets(labels, shard, cdt)
        k = 3 if diagnostics else 1
        m, s, t = (torch.empty(k, n, dtype=torch.float64, device=zs.device) for _ in range(3))
        zbuf = torch.empty(min(rows, n), vocab, dtype=mdt, device=zs.device)
        ebuf = zbuf if mdt == cdt else torch.empty_like(zbuf, dtype=cdt)
        for r0, r1 in chunks(n, rows):
            z, e = zbuf[:r1 - r0], ebuf[:r1 - r0]
            idx, loc = tg.index[r0:r1], tg.local[r0:r1]
            mix_logits_(z, zs2[r0:r1], zw2[r0:r1], lam)
            ce_chunk_stats(z, e, idx, loc, m[0, r0:r1], s[0, r0:r1], t[0, r0:r1])
            if diagnostics:
                for j, src in ((1, zs2), (2, zw2)):
                    z.copy_(src[r0:r1])
                    ce_chunk_stats(z, e, idx, loc, m[j, r0:r1], s[j, r0:r1], t[j, r0:r1])
        out_dtype = torch.float64 if cdt == torch.float64 else torch.float32
        losses, lse = cross_entropy_from_stats(m, s, t, shard, tg, labels.shape, out_dtype)
        ctx.lam, ctx.rows = lam, rows
        ctx.save_for_backward(zs, zw, tg.index, tg.local_w, tg.valid, lse[0])
        if diagnostics:
            ctx.mark_non_differentiable(losses[1], losses[2])
            return losses[0], losses[1], losses[2]
        return losses[0], None, None

    @staticmethod
    def backward(ctx, grad_loss, *_):
        zs, zw, index, local_w, valid, lse = ctx.saved_tensors
        lam, rows = ctx.lam, ctx.rows
        need_s, need_w = ctx.needs_input_grad[:2]
        vocab, n = zs.shape[-1], index.numel()
        zs2, zw2 = zs.reshape(n, vocab), zw.reshape(n, vocab)
        cdt = local_w.dtype
        mdt = _mix_dtype(torch.promote_types(zs.dtype, zw.dtype))
        go = torch.where(valid, grad_loss.reshape(n).to(cdt), torch.zeros((), dtype=cdt, device=zs.device))
        lse = lse.to(mdt)
        # A coefficient of 0 gives an exactly zero gradient: skip that branch's work.
        want_s, want_w = need_s and lam != 0.0, need_w and lam != 1.0
        dzs = torch.empty_like(zs2) if want_s else None
        dzw = torch.empty_like(zw2) if want_w else None
        if want_s or want_w:
            zbuf = torch.empty(min(rows, n), vocab, dtype=mdt, device=zs.device)
            ebuf = zbuf if mdt == cdt else torch.empty_like(zbuf, dtype=cdt)
            low = any(d is not None and d.dtype != cdt for d in (dzs, dzw))
            tmp = torch.empty_like(ebuf) if low else None
            for r0, r1 in chunks(n, rows):
                z, e = zbuf[:r1 - r0], ebuf[:r1 - r0]
                mix_logits_(z, zs2[r0:r1], zw2[r0:r1], lam)
                z.sub_(lse[r0:r1].unsqueeze(1))
                if e is not z:
                    e.copy_(z)
                e.exp_()  # softmax of the mixed logits
                e.scatter_add_(1, index[r0:r1].unsqueeze(1), local_w[r0:r1].unsqueeze(1).neg())
                e.mul_(go[r0:r1].unsqueeze(1))  # g = dloss/dz_mix
                t = tmp[:r1 - r0] if low else None
                if want_s:
                    scaled_copy_(dzs[r0:r1], e, lam, t)
                if want_w:
                    scaled_copy_(dzw[r0:r1], e, 1.0 - lam, t)
        grad_s = (dzs.view_as(zs) if want_s else torch.zeros_like(zs)) if need_s else None
        grad_w = (dzw.view_as(zw) if want_w else torch.zeros_like(zw)) if need_w else None
        return grad_s, grad_w, None, None, None, None, None


def mixed_logit_cross_entropy(strong_logits: torch.Tensor, weak_logits: torch.Tensor, labels: torch.Tensor,
                              lam: float, tp_group=None, *, chunk_size: int | None = None,
                              return_diagnostics: bool = False):
    """Per-token WMSS loss `-log softmax(lam*z_s + (1-lam)*z_w)[label]` over the full vocabulary
    (paper Eq. 5-6), from this TP rank's vocab shards.

    strong_logits, weak_logits: `[s, b, V/tp]` (any leading shape matching `labels`), any float dtype.
    labels: global token ids, `-100` = ignored (loss 0, no gradient). lam in [0, 1].
    tp_group: defaults to megatron's tensor-model-parallel group; no reduction when torch.distributed
    or megatron parallel_state is not initialized.
    Returns fp32 `[s, b]` (fp64 for fp64 inputs); backward gives `lam*g` and `(1-lam)*g` to the two
    logits. With `return_diagnostics=True` returns `(loss, strong_ce, weak_ce)`, the last two the
    plain per-token CE of each model (no gradient; 0 at ignored tokens).
    `chunk_size`: tokens per chunk of the fp64/fp32 working buffers (default: ~256 MiB of them).
    """
    if strong_logits.shape != weak_logits.shape:
        raise ValueError(f"strong and weak logits differ in shape: {tuple(strong_logits.shape)} vs "
                         f"{tuple(weak_logits.shape)} (both models must share vocab padding and TP)")
    if strong_logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(strong_logits.shape)} do not match labels {tuple(labels.shape)}")
    lam = check_lam(lam)
    shard = vocab_shard(tp_group, strong_logits.shape[-1])
    mdt = _mix_dtype(torch.promote_types(strong_logits.dtype, weak_logits.dtype))
    per_elem = mdt.itemsize + (0 if mdt == torch.float32 else 4) + (4 if return_diagnostics else 0)
    rows = chunk_len(chunk_size, shard.size, per_elem)
    loss, strong_ce, weak_ce = _MixedLogitCrossEntropy.apply(
        strong_logits, weak_logits, labels, lam, shard, rows, return_diagnostics)
    return (loss, strong_ce, weak_ce) if return_diagnostics else loss


@torch.no_grad()
def vocab_parallel_entropy(logits: torch.Tensor, tp_group=None, *, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) over the full vocabulary per token (paper Eq. 7, before the
    averaging over completion tokens), from this rank's `[s, b, V/tp]` shard:
    `H = log S - sum exp(z - M)(z - M) / S`, S = sum exp(z - M), M the global max, fp32 math
    (fp64 for fp64 logits); max, S and the weighted sum are combined across the TP group.
    Forward-only (no autograd graph). Returns fp32 `[s, b]` (fp64 for fp64 logits)."""
    vocab = logits.shape[-1]
    n = logits.numel() // max(1, vocab)
    shard = vocab_shard(tp_group, vocab)
    cdt = compute_dtype(logits.dtype)
    rows = chunk_len(chunk_size, vocab, 2 * cdt.itemsize)
    flat = logits.reshape(n, vocab)
    m, s, t = (torch.empty(n, dtype=torch.float64, device=logits.device) for _ in range(3))
    zbuf = torch.empty(min(rows, n), vocab, dtype=cdt, device=logits.device)
    ebuf = torch.empty_like(zbuf)
    for r0, r1 in chunks(n, rows):
        z = zbuf[:r1 - r0].copy_(flat[r0:r1])
        entropy_chunk_stats(z, ebuf[:r1 - r0], m[r0:r1], s[r0:r1], t[r0:r1])
    return reduce_entropy_stats(m, s, t, shard).to(cdt).view(logits.shape[:-1])
