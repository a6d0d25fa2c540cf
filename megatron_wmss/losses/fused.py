"""Fused, chunked WMSS loss from final hidden states and output-layer weight shards.

The mixed logits are one linear map of the two hidden states:
`z_mix = lam*h_s W_s^T + (1-lam)*h_w W_w^T = [h_s | h_w] [lam W_s | (1-lam) W_w]^T` (Eq. 5). The kernel
walks this rank's vocab shard in blocks of `chunk_size` vocabulary rows: the forward forms `z_mix` for
all tokens and one block (fp32/fp64: one GEMM into the buffer, then a second accumulating with
`beta=lam, alpha=1-lam`) and folds it into per-token statistics (running max, sum-exp, target logit);
only those `[tokens]` statistics are kept for backward. The backward recomputes each block, forms
`g = softmax - onehot` scaled by the incoming per-token gradient, writes that block's
`dW_s = lam g^T h_s`, `dW_w = (1-lam) g^T h_w` (one GEMM over all tokens, so each dW entry is
rounded once, as in the unfused GEMM, and no second `[V/tp, h]` accumulator is needed) and accumulates
`dh_s += lam g W_s`, `dh_w += (1-lam) g W_w` (`[tokens, h]`, in fp32). At most one `[tokens, block]`
fp32 buffer (plus a bf16 one for bf16 inputs, three with diagnostics) exists at a time; neither
model's full logits ever do. Blocking over the vocabulary rather than over tokens is what keeps dW
exact in bf16 without an fp32 copy of both weight gradients.

TP: the hidden states are replicated on every rank of the TP group (under sequence parallelism the
callers gather them first: `sequence_parallel.gather_hidden`) and each rank holds the same vocab slice
of both weights. Each rank's `dh` is a partial sum over its vocab slice; by default the backward
all-reduces it over the TP group, as megatron's `copy_to_tensor_model_parallel_region` does in front of
a ColumnParallelLinear, so callers pass plain hidden states and must not wrap them again. `reduce_hidden_grad=False` returns the partial sums instead,
for callers whose own op reduces them (e.g. `gather_from_sequence_parallel_region`, whose backward
reduce-scatters).

Why not megatron-core: its output layer + `vocab_parallel_cross_entropy` materialize the full
`[tokens, V/tp]` logits of each model (plus the fp32 softmax), which is what this module avoids.
"""

from __future__ import annotations

import torch

from megatron_wmss.losses._common import (
    EMPTY_MAX,
    Targets,
    VocabShard,
    ce_chunk_stats,
    check_lam,
    cross_entropy_from_stats,
    chunk_len,
    chunks,
    compute_dtype,
    entropy_chunk_stats,
    merge_ce_,
    merge_entropy_,
    mix_logits_,
    reduce_entropy_stats,
    vocab_shard,
)


class _Buffers:
    """Flat work buffers viewed as [tokens, width] for blocks of any width up to `block` (the last
    block is narrower; a flat prefix keeps every view contiguous for `out=` GEMMs)."""

    def __init__(self, n: int, block: int, dtypes, device):
        self.n = n
        self.flat = [None if d is None else torch.empty(n * block, dtype=d, device=device) for d in dtypes]

    def views(self, width: int):
        return [None if f is None else f[:self.n * width].view(self.n, width) for f in self.flat]


def _logits_into(z: torch.Tensor, h: torch.Tensor, w: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
    """z = h @ w^T. bf16/fp16 inputs: the GEMM output is rounded to the input dtype (what the output
    layer would hand to the loss) in `low`, then widened into z."""
    if low is None:
        return torch.mm(h, w.t(), out=z)
    torch.mm(h, w.t(), out=low)
    return z.copy_(low)


def _mixed_logits_into(z, hs, ws, hw, ww, lam: float, low) -> torch.Tensor:
    """The mixed logits of one block from hidden states (Eq. 5, `mix_logits_`); lam in {0, 1} skips a
    model. fp32/fp64: the mix is folded into the second GEMM (`addmm_` with beta=lam, alpha=1-lam: no
    second [tokens, block] buffer); bf16/fp16: each model's logits rounded to the input dtype, then mixed."""
    if lam == 0.0:
        return _logits_into(z, hw, ww, low)
    _logits_into(z, hs, ws, low)
    if lam == 1.0:
        return z
    if low is None:
        return z.addmm_(hw, ww.t(), beta=lam, alpha=1.0 - lam)
    return mix_logits_(z, z, torch.mm(hw, ww.t(), out=low), lam)


def _block(w: torch.Tensor | None, v0: int, v1: int) -> torch.Tensor | None:
    """Rows [v0, v1) of an output weight shard; None for an absent model (plain CE)."""
    return None if w is None else w[v0:v1]


def _block_targets(index: torch.Tensor, local: torch.Tensor, v0: int, v1: int):
    """Labels that fall in vocab block [v0, v1) of this rank's shard: (mask, column within the block)."""
    inside = local & (index >= v0) & (index < v1)
    return inside, torch.where(inside, index - v0, torch.zeros_like(index))


def _check_inputs(labels, *branches):
    """Each (name, hidden, weight) fits the labels; all weights share V/tp; one dtype for all."""
    for name, h, w in branches:
        if w.dim() != 2 or w.shape[0] != branches[0][2].shape[0]:
            raise ValueError(f"output weight shards must be [V/tp, h] with equal V/tp: "
                             f"{[tuple(b[2].shape) for b in branches]} (both models must share vocab padding and TP)")
        if h.shape[-1] != w.shape[1] or h.shape[:-1] != labels.shape:
            raise ValueError(f"{name} {tuple(h.shape)} does not fit weight {tuple(w.shape)} and labels "
                             f"{tuple(labels.shape)}")
    dtypes = [t.dtype for _, h, w in branches for t in (h, w)]
    if len(set(dtypes)) != 1:
        raise ValueError(f"hidden states and weights must share one dtype, got {', '.join(map(str, dtypes))}")


class _MixedLinearCrossEntropy(torch.autograd.Function):
    """Eq. 5-6 from hidden states; with lam = 1 and no weak inputs (hw = ww = None) it is the plain
    fused vocab-parallel cross-entropy of one model (`linear_cross_entropy`)."""

    @staticmethod
    def forward(ctx, hs, ws, hw, ww, labels, lam: float, shard: VocabShard, block: int,
                reduce_hidden_grad: bool, diagnostics: bool):
        n, dtype, device = labels.numel(), ws.dtype, ws.device
        hs2, hw2 = hs.reshape(n, hs.shape[-1]), None if hw is None else hw.reshape(n, hw.shape[-1])
        cdt = compute_dtype(dtype)
        tg = Targets(labels, shard, cdt)
        k = 3 if diagnostics else 1
        m, s, t, mb, sb, tb = (torch.empty(k, n, dtype=torch.float64, device=device) for _ in range(6))
        if shard.real == 0:
            m.fill_(EMPTY_MAX), s.zero_(), t.zero_()
        bufs = _Buffers(n, block, [cdt] * k + [None if dtype == cdt else dtype], device)
        for v0, v1 in chunks(shard.real, block):
            *zbufs, low = bufs.views(v1 - v0)
            inside, col = _block_targets(tg.index, tg.local, v0, v1)
            if diagnostics:  # both models' logits separately, then the mix: three sets of statistics
                zs = _logits_into(zbufs[1], hs2, ws[v0:v1], low)
                zw = _logits_into(zbufs[2], hw2, ww[v0:v1], low)
                mix_logits_(zbufs[0], zs, zw, lam)
            else:
                _mixed_logits_into(zbufs[0], hs2, ws[v0:v1], hw2, _block(ww, v0, v1), lam, low)
            for j, z in enumerate(zbufs):
                ce_chunk_stats(z, z, col, inside, mb[j], sb[j], tb[j])
            if v0 == 0:
                m.copy_(mb), s.copy_(sb), t.copy_(tb)
            else:
                merge_ce_(m, s, t, mb, sb, tb)
        out_dtype = torch.float64 if cdt == torch.float64 else torch.float32
        losses, lse = cross_entropy_from_stats(m, s, t, shard, tg, labels.shape, out_dtype)
        ctx.lam, ctx.block, ctx.shard, ctx.reduce_hidden_grad = lam, block, shard, reduce_hidden_grad
        ctx.save_for_backward(hs, ws, hw, ww, tg.index, tg.local, tg.valid, lse[0].to(cdt))
        if diagnostics:
            ctx.mark_non_differentiable(losses[1], losses[2])
            return losses[0], losses[1], losses[2]
        return losses[0], None, None

    @staticmethod
    def backward(ctx, grad_loss, *_):
        hs, ws, hw, ww, index, local, valid, lse = ctx.saved_tensors
        lam, block, shard = ctx.lam, ctx.block, ctx.shard
        need_hs, need_ws, need_hw, need_ww = ctx.needs_input_grad[:4]
        n, dtype, cdt, device = index.numel(), ws.dtype, lse.dtype, ws.device
        hs2, hw2 = hs.reshape(n, hs.shape[-1]), None if hw is None else hw.reshape(n, hw.shape[-1])
        go = torch.where(valid, grad_loss.reshape(n).to(cdt), torch.zeros((), dtype=cdt, device=device))
        # A coefficient of 0 gives exactly zero gradients: that model's GEMMs are skipped.
        do_s, do_w = lam != 0.0, lam != 1.0
        dhs, dhw = _hidden_grad_buffers(need_hs and do_s, hs2, need_hw and do_w, hw2, cdt)
        dws = torch.empty_like(ws) if need_ws and do_s else None  # written block by block
        dww = torch.empty_like(ww) if need_ww and do_w else None
        for dw in (dws, dww):  # padding rows take no part in the softmax: zero gradient
            if dw is not None:
                dw[shard.real:].zero_()
        branches = [(coef, h2, w, dh, dw) for coef, h2, w, dh, dw in
                    ((lam, hs2, ws, dhs, dws), (1.0 - lam, hw2, ww, dhw, dww)) if dh is not None or dw is not None]
        if branches:
            low_dtype = None if dtype == cdt else dtype
            tmp_dtype = None if low_dtype is None else cdt
            bufs = _Buffers(n, block, [cdt, low_dtype, tmp_dtype], device)
            for v0, v1 in chunks(shard.real, block):
                z, low, tmp = bufs.views(v1 - v0)
                inside, col = _block_targets(index, local, v0, v1)
                _mixed_logits_into(z, hs2, ws[v0:v1], hw2, _block(ww, v0, v1), lam, low)
                z.sub_(lse.unsqueeze(1)).exp_()  # softmax of the mixed logits
                z.scatter_add_(1, col.unsqueeze(1), inside.to(cdt).neg().unsqueeze(1))
                z.mul_(go.unsqueeze(1))  # g = dloss/dz_mix for this block
                for coef, h2, w, dh, dw in branches:
                    if low is None:  # fp32/fp64: the coefficient is applied inside the GEMMs
                        if dh is not None:
                            dh.addmm_(z, w[v0:v1], alpha=coef)
                        if dw is not None:
                            torch.mm(z.t(), h2, out=dw[v0:v1]).mul_(coef)
                    else:  # bf16/fp16: coef*g rounded once to the input dtype, as autograd would hand it
                        # to the output layer's backward; bf16 GEMMs; dh accumulated in fp32
                        low.copy_(torch.mul(z, coef, out=tmp))
                        if dh is not None:
                            dh.add_(torch.mm(low, w[v0:v1]))
                        if dw is not None:
                            torch.mm(low.t(), h2, out=dw[v0:v1])
        if shard.reduces and ctx.reduce_hidden_grad:
            if dhs is not None and dhw is not None and dhs._base is not None and dhs._base is dhw._base:
                shard.all_reduce_(dhs._base)  # both models' dh in one buffer: one all-reduce
            else:
                for dh in (dhs, dhw):
                    if dh is not None:
                        shard.all_reduce_(dh)

        def grad(need, buf, like):
            if not need:
                return None
            return buf.reshape(like.shape).to(like.dtype) if buf is not None else torch.zeros_like(like)

        return (grad(need_hs, dhs, hs), grad(need_ws, dws, ws), grad(need_hw, dhw, hw), grad(need_ww, dww, ww),
                None, None, None, None, None, None)


def _hidden_grad_buffers(need_s: bool, hs2, need_w: bool, hw2, cdt):
    """Zeroed dh accumulators in the compute dtype (None where not wanted); when both are wanted and
    the hidden sizes agree they are two halves of one [2, N, h] buffer, so TP needs one all-reduce."""
    if need_s and need_w and hs2.shape == hw2.shape:
        return torch.zeros(2, *hs2.shape, dtype=cdt, device=hs2.device).unbind(0)
    return (torch.zeros(hs2.shape, dtype=cdt, device=hs2.device) if need_s else None,
            torch.zeros(hw2.shape, dtype=cdt, device=hw2.device) if need_w else None)


def mixed_linear_cross_entropy(h_strong: torch.Tensor, w_strong: torch.Tensor, h_weak: torch.Tensor,
                               w_weak: torch.Tensor, labels: torch.Tensor, lam: float, tp_group=None, *,
                               chunk_size: int | None = None, reduce_hidden_grad: bool = True,
                               return_diagnostics: bool = False, vocab_size: int | None = None):
    """Per-token WMSS loss (paper Eq. 5-6) from final hidden states and output-layer weight shards,
    without materializing `[tokens, V/tp]` logits of either model (vocab blocks, recomputed in backward).

    h_strong, h_weak: `[s, b, h]` (leading shape = labels.shape), replicated across the TP group.
    w_strong, w_weak: this rank's output-layer shards `[V/tp, h]` of the same vocab slice; one dtype for
    all four. labels: global ids, -100 ignored. lam in [0, 1]. Returns fp32 `[s, b]` (fp64 for fp64
    inputs), equal to `mixed_logit_cross_entropy(h_s @ w_s.T, h_w @ w_w.T, labels, lam)`, with exact
    gradients to all four inputs; dh is all-reduced over TP in backward unless
    `reduce_hidden_grad=False` (see module docstring).
    chunk_size: vocabulary rows (of this rank's shard) per block; default: as many as fit a ~256 MiB
    `[tokens, block]` working set. `return_diagnostics=True` -> `(loss, strong_ce, weak_ce)`, the last
    two the no-grad per-token CE of each model, computed in the same pass. `vocab_size`: the unpadded
    vocabulary; weight rows at or above it (megatron's TP padding) are left out of the softmax and get
    zero gradient (None: no padding).
    """
    _check_inputs(labels, ("h_strong", h_strong, w_strong), ("h_weak", h_weak, w_weak))
    lam = check_lam(lam)
    shard = vocab_shard(tp_group, w_strong.shape[0], vocab_size)
    cdt = compute_dtype(w_strong.dtype)
    low = w_strong.dtype != cdt  # bf16/fp16: a low-precision logits buffer (+ an fp32 one in backward)
    per_elem = (3 if return_diagnostics else 2 if low else 1) * cdt.itemsize + (w_strong.dtype.itemsize if low else 0)
    block = min(chunk_len(chunk_size, labels.numel(), per_elem), max(1, w_strong.shape[0]))
    loss, strong_ce, weak_ce = _MixedLinearCrossEntropy.apply(
        h_strong, w_strong, h_weak, w_weak, labels, lam, shard, block, reduce_hidden_grad, return_diagnostics)
    return (loss, strong_ce, weak_ce) if return_diagnostics else loss


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, tp_group=None, *,
                         chunk_size: int | None = None, reduce_hidden_grad: bool = True,
                         vocab_size: int | None = None) -> torch.Tensor:
    """Per-token cross-entropy of softmax(h @ w^T) over the full vocabulary (SFT), fused and
    vocab-parallel like `mixed_linear_cross_entropy` (the same kernel with one model): `[s, b, h]`
    hidden states, this rank's `[V/tp, h]` output shard, global labels (-100 ignored). Returns fp32
    `[s, b]` (fp64 for fp64 inputs); `vocab_size` leaves the TP padding rows out of the softmax."""
    _check_inputs(labels, ("h", h, w))
    shard = vocab_shard(tp_group, w.shape[0], vocab_size)
    cdt = compute_dtype(w.dtype)
    low = w.dtype != cdt
    per_elem = (2 if low else 1) * cdt.itemsize + (w.dtype.itemsize if low else 0)
    block = min(chunk_len(chunk_size, labels.numel(), per_elem), max(1, w.shape[0]))
    loss, _, _ = _MixedLinearCrossEntropy.apply(h, w, None, None, labels, 1.0, shard, block, reduce_hidden_grad, False)
    return loss


@torch.no_grad()
def linear_vocab_parallel_entropy(h: torch.Tensor, w: torch.Tensor, tp_group=None, *,
                                  chunk_size: int | None = None, vocab_size: int | None = None) -> torch.Tensor:
    """Per-token entropy over the full vocabulary (paper Eq. 7) of softmax(h @ w^T), from hidden states
    `[s, b, h]` and this rank's output weight shard `[V/tp, h]`, in vocab blocks of `chunk_size` rows
    (the WD-DS scoring pass). Forward-only. Equals `vocab_parallel_entropy(h @ w.T)`; returns fp32
    `[s, b]` (fp64 for fp64). `vocab_size`: the unpadded vocabulary (padding rows are left out)."""
    if w.dim() != 2 or h.shape[-1] != w.shape[1] or h.dtype != w.dtype:
        raise ValueError(f"hidden {tuple(h.shape)} {h.dtype} does not fit weight {tuple(w.shape)} {w.dtype}")
    vocab, n = w.shape[0], h.numel() // max(1, h.shape[-1])
    shard = vocab_shard(tp_group, vocab, vocab_size)
    cdt = compute_dtype(w.dtype)
    low_dtype = None if w.dtype == cdt else w.dtype
    block = min(chunk_len(chunk_size, n, 2 * cdt.itemsize + (w.dtype.itemsize if low_dtype else 0)), max(1, vocab))
    h2 = h.reshape(n, h.shape[-1])
    m, s, t, mb, sb, tb = (torch.empty(n, dtype=torch.float64, device=w.device) for _ in range(6))
    if shard.real == 0:
        m.fill_(EMPTY_MAX), s.zero_(), t.zero_()
    bufs = _Buffers(n, block, [cdt, cdt, low_dtype], w.device)
    for v0, v1 in chunks(shard.real, block):
        z, e, low = bufs.views(v1 - v0)
        entropy_chunk_stats(_logits_into(z, h2, w[v0:v1], low), e, mb, sb, tb)
        if v0 == 0:
            m.copy_(mb), s.copy_(sb), t.copy_(tb)
        else:
            merge_entropy_(m, s, t, mb, sb, tb)
    return reduce_entropy_stats(m, s, t, shard).to(cdt).view(h.shape[:-1])
