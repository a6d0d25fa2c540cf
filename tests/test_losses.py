"""WMSS losses (paper Eq. 5-7) on one process: mixed-logit CE and entropy against float64 references over
the full vocabulary, the fused/chunked variant against the unfused one, gradcheck, and the memory bound
of the fused variant. TP = 2 / 4 runs are in test_losses_tp.py.

Error metric throughout: max |x - ref| / max |ref| over the whole tensor (a per-tensor relative error).
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from megatron_wmss.losses import (
    linear_cross_entropy,
    linear_vocab_parallel_entropy,
    mixed_linear_cross_entropy,
    mixed_logit_cross_entropy,
    vocab_parallel_entropy,
)

LAMS = [0.0, 0.42, 0.5, 1.0]
S, B, V, H = 6, 3, 96, 16


# ---------------------------------------------------------------- float64 references and helpers

def reference_ce(zs, zw, labels, lam):
    """-log softmax(lam*zs + (1-lam)*zw)[label] in float64 over the full vocabulary; 0 at -100."""
    z = lam * zs.double() + (1.0 - lam) * zw.double()
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction="none").view(labels.shape)


def reference_entropy(z):
    z = z.double()
    return -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1)


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    scale = ref.abs().max()
    assert scale > 0, "reference is all zeros: compare exactly instead"
    return ((x - ref).abs().max() / scale).item()


def make_logits(kind, shape, gen, dtype=torch.float32):
    """Logit fixtures: ordinary, magnitude 100+ (offset and scale), and near-ties at 300."""
    z = torch.randn(*shape, generator=gen, dtype=torch.float64)
    if kind == "unit":
        z = 2 * z
    elif kind == "offset100":
        z = 100 + 3 * z
    elif kind == "scale100":
        z = 100 * z
    elif kind == "ties300":
        z[..., :2] = 300 + 1e-2 * z[..., :2]
    else:
        raise ValueError(kind)
    return z.to(dtype)


def make_labels(shape, vocab, gen):
    """Labels with one sample (batch column) fully ignored and a few scattered ignored tokens."""
    labels = torch.randint(0, vocab, shape, generator=gen)
    labels[:, 1] = -100
    labels[0, 0] = labels[3, 2] = -100
    return labels


def with_grads(fn, inputs, weights):
    """fn(*inputs) with leaves cloned; backward of sum(weights * out). Returns (out, [grads])."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def assert_matches(out, grads, ref_out, ref_grads, tol, what=""):
    assert torch.isfinite(out).all()
    assert rel_err(out, ref_out) <= tol, f"{what} loss: {rel_err(out, ref_out):.2e}"
    for i, (g, rg) in enumerate(zip(grads, ref_grads)):
        assert torch.isfinite(g).all()
        if rg.abs().max() == 0:  # e.g. the weak branch at lam = 1: exactly zero
            assert g.abs().max() == 0, f"{what} grad {i} should be exactly zero"
        else:
            assert rel_err(g, rg) <= tol, f"{what} grad {i}: {rel_err(g, rg):.2e}"


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ---------------------------------------------------------------- mixed_logit_cross_entropy

@pytest.mark.parametrize("kind", ["unit", "offset100", "scale100", "ties300"])
@pytest.mark.parametrize("lam", LAMS)
def test_mixed_ce_matches_float64_reference(kind, lam, gen):
    zs, zw = make_logits(kind, (S, B, V), gen), make_logits(kind, (S, B, V), gen)
    labels = make_labels((S, B), V, gen)
    weights = torch.rand(S, B, generator=gen, dtype=torch.float64)
    ref, ref_grads = with_grads(lambda a, b: reference_ce(a, b, labels, lam), [zs.double(), zw.double()], weights)
    for chunk in (None, 5):
        out, grads = with_grads(lambda a, b: mixed_logit_cross_entropy(a, b, labels, lam, chunk_size=chunk),
                                [zs, zw], weights.float())
        assert out.dtype == torch.float32 and out.shape == (S, B)
        assert_matches(out, grads, ref, ref_grads, 1e-6, f"chunk={chunk}")
        ignored = labels == -100
        assert (out[ignored] == 0).all()
        assert all((g[ignored] == 0).all() for g in grads)
    # the two gradients are lam*g and (1-lam)*g of one g
    if 0 < lam < 1:
        assert rel_err(grads[0] / lam, grads[1] / (1 - lam)) <= 1e-6


@pytest.mark.parametrize("lam", [0.0, 0.42, 1.0])
def test_mixed_ce_bf16_inputs(lam, gen):
    """bf16 logits against the float64 reference on the same bf16 values: the loss is fp32 (1e-5);
    gradients come back in bf16, so they are within bf16 rounding (2^-8 relative)."""
    zs, zw = (make_logits("offset100", (S, B, V), gen, torch.bfloat16) for _ in range(2))
    labels = make_labels((S, B), V, gen)
    weights = torch.rand(S, B, generator=gen, dtype=torch.float64)
    ref, ref_grads = with_grads(lambda a, b: reference_ce(a, b, labels, lam), [zs.double(), zw.double()], weights)
    out, grads = with_grads(lambda a, b: mixed_logit_cross_entropy(a, b, labels, lam, chunk_size=4),
                            [zs, zw], weights.float())
    assert out.dtype == torch.float32 and grads[0].dtype == torch.bfloat16
    assert rel_err(out, ref) <= 1e-5
    assert_matches(out, grads, ref, ref_grads, 2 ** -8)


def test_all_ignored_rows_give_zero_not_nan(gen):
    zs, zw = make_logits("scale100", (S, B, V), gen), make_logits("scale100", (S, B, V), gen)
    labels = torch.full((S, B), -100)
    out, grads = with_grads(lambda a, b: mixed_logit_cross_entropy(a, b, labels, 0.5), [zs, zw], 1.0)
    assert (out == 0).all() and all((g == 0).all() for g in grads)
    hs, hw = torch.randn(S, B, H, generator=gen), torch.randn(S, B, H, generator=gen)
    ws, ww = torch.randn(V, H, generator=gen), torch.randn(V, H, generator=gen)
    out, grads = with_grads(lambda *x: mixed_linear_cross_entropy(*x, labels, 0.5), [hs, ws, hw, ww], 1.0)
    assert (out == 0).all() and all((g == 0).all() for g in grads)
    assert torch.isfinite(vocab_parallel_entropy(zs)).all()


@pytest.mark.parametrize("lam", [0.0, 0.42, 1.0])
def test_gradcheck_float64(lam, gen):
    labels = torch.tensor([[1, -100], [6, 3], [0, 5]])
    zs = torch.randn(3, 2, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    zw = torch.randn(3, 2, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: mixed_logit_cross_entropy(a, b, labels, lam, chunk_size=2), (zs, zw))
    hs, hw = (torch.randn(3, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ws, ww = (torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(
        lambda *x: mixed_linear_cross_entropy(*x, labels, lam, chunk_size=4), (hs, ws, hw, ww))


def test_diagnostics_are_each_models_ce(gen):
    zs, zw = make_logits("unit", (S, B, V), gen), make_logits("unit", (S, B, V), gen)
    labels = make_labels((S, B), V, gen)
    loss, strong_ce, weak_ce = mixed_logit_cross_entropy(zs, zw, labels, 0.42, chunk_size=4,
                                                         return_diagnostics=True)
    assert rel_err(loss, reference_ce(zs, zw, labels, 0.42)) <= 1e-6
    assert rel_err(strong_ce, reference_ce(zs, zw, labels, 1.0)) <= 1e-6
    assert rel_err(weak_ce, reference_ce(zs, zw, labels, 0.0)) <= 1e-6
    assert torch.equal(mixed_logit_cross_entropy(zs, zw, labels.int(), 0.42, chunk_size=4), loss)  # int32 ids


def test_argument_errors(gen):
    zs = torch.randn(S, B, V, generator=gen)
    labels = make_labels((S, B), V, gen)
    with pytest.raises(ValueError, match="lam"):
        mixed_logit_cross_entropy(zs, zs, labels, 1.5)
    with pytest.raises(ValueError, match="shape"):
        mixed_logit_cross_entropy(zs, zs[..., :-1], labels, 0.5)
    with pytest.raises(ValueError, match="labels"):
        mixed_logit_cross_entropy(zs, zs, labels[:-1], 0.5)
    with pytest.raises(ValueError, match="chunk_size"):
        mixed_logit_cross_entropy(zs, zs, labels, 0.5, chunk_size=0)
    h, w = torch.randn(S, B, H), torch.randn(V, H)
    with pytest.raises(ValueError, match="weight"):
        mixed_linear_cross_entropy(h, w, h, w[:-1], labels, 0.5)
    with pytest.raises(ValueError, match="dtype"):
        mixed_linear_cross_entropy(h, w, h.double(), w.double(), labels, 0.5)


# ---------------------------------------------------------------- entropy

@pytest.mark.parametrize("kind", ["unit", "offset100", "scale100", "ties300"])
def test_entropy_matches_float64_reference(kind, gen):
    z = make_logits(kind, (S, B, V), gen)
    ref = reference_entropy(z)
    for chunk in (None, 4):
        out = vocab_parallel_entropy(z, chunk_size=chunk)
        assert out.dtype == torch.float32 and out.shape == (S, B)
        assert rel_err(out, ref) <= 1e-6
    zb = z.bfloat16()
    assert rel_err(vocab_parallel_entropy(zb), reference_entropy(zb)) <= 1e-6


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_fused_entropy_equals_unfused(dtype, tol, gen):
    h = torch.randn(S, B, H, generator=gen).to(dtype)
    w = (3 * torch.randn(V, H, generator=gen)).to(dtype)
    unfused = vocab_parallel_entropy(h @ w.t())
    for chunk in (1, 5, None):
        assert rel_err(linear_vocab_parallel_entropy(h, w, chunk_size=chunk), unfused) <= tol
    assert rel_err(linear_vocab_parallel_entropy(h, w), reference_entropy((h @ w.t()).double())) <= max(tol, 1e-6)


# ---------------------------------------------------------------- fused / chunked variant

def _fused_inputs(gen, dtype, scale=1.0):
    hs, hw = (torch.randn(S, B, H, generator=gen, dtype=torch.float64) for _ in range(2))
    ws, ww = (scale * torch.randn(V, H, generator=gen, dtype=torch.float64) for _ in range(2))
    return [x.to(dtype) for x in (hs, ws, hw, ww)]


def _unfused_from_hidden(hs, ws, hw, ww, labels, lam):
    return mixed_logit_cross_entropy(hs @ ws.t(), hw @ ww.t(), labels, lam)


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2 ** -6)])
def test_fused_equals_unfused(lam, dtype, tol, gen):
    """Values and all four gradients, for a token-mean loss (equal weights) and per-token weights.
    fp64 to rounding; fp32 within GEMM summation-order noise; bf16: the loss to fp32 accuracy,
    gradients within a few bf16 ulps (both paths round the logits and the logit gradient to bf16 and
    dW once; the fused dh is summed in fp32 from one bf16 GEMM output per vocab block, up to 96 here)."""
    inputs = _fused_inputs(gen, dtype, scale=4.0)
    labels = make_labels((S, B), V, gen)
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    for weights in (torch.full((S, B), 1 / 7, dtype=wdtype),
                    torch.rand(S, B, generator=gen, dtype=torch.float64).to(wdtype)):
        ref, ref_grads = with_grads(lambda *x: _unfused_from_hidden(*x, labels, lam), inputs, weights)
        f64, f64_grads = with_grads(lambda *x: reference_ce(x[0] @ x[1].t(), x[2] @ x[3].t(), labels, lam),
                                    [x.double() for x in inputs], weights.double())
        for chunk in (1, 5, None):
            out, grads = with_grads(lambda *x: mixed_linear_cross_entropy(*x, labels, lam, chunk_size=chunk),
                                    inputs, weights)
            assert out.dtype == wdtype
            assert [g.dtype for g in grads] == [dtype] * 4
            assert rel_err(out, ref) <= (1e-5 if dtype == torch.bfloat16 else tol), f"chunk={chunk}"
            assert_matches(out, grads, ref, ref_grads, tol, f"chunk={chunk}")
            if dtype != torch.bfloat16:  # and the float64 reference directly
                assert_matches(out, grads, f64, f64_grads, max(tol, 1e-5), f"f64 chunk={chunk}")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_plain_fused_ce_matches_float64_reference_and_lam1(dtype, tol, gen):
    """SFT's plain fused CE: the float64 reference F.cross_entropy(h @ w.T) (loss and both gradients),
    and bitwise the mixed kernel at lam = 1 (WD-JT at lam = 1 is SFT)."""
    hs, ws, hw, ww = _fused_inputs(gen, dtype, scale=4.0)
    labels = make_labels((S, B), V, gen)
    weights = torch.rand(S, B, generator=gen, dtype=torch.float64).to(torch.float64 if dtype == torch.float64
                                                                       else torch.float32)
    f64, f64_grads = with_grads(lambda h, w: reference_ce(h @ w.t(), h @ w.t(), labels, 1.0),
                                [hs.double(), ws.double()], weights.double())
    for chunk in (1, 5, None):
        out, grads = with_grads(lambda h, w: linear_cross_entropy(h, w, labels, chunk_size=chunk), [hs, ws], weights)
        assert_matches(out, grads, f64, f64_grads, tol, f"chunk={chunk}")
        mixed, mixed_grads = with_grads(lambda h, w: mixed_linear_cross_entropy(h, w, hw, ww, labels, 1.0,
                                                                                chunk_size=chunk), [hs, ws], weights)
        assert torch.equal(out, mixed) and all(torch.equal(a, b) for a, b in zip(grads, mixed_grads))


def test_fused_second_backward_and_no_grad(gen):
    """A retained graph gives the same gradients twice; under no_grad nothing is recorded."""
    inputs = [x.requires_grad_() for x in _fused_inputs(gen, torch.float32)]
    labels = make_labels((S, B), V, gen)
    loss = mixed_linear_cross_entropy(*inputs, labels, 0.42, chunk_size=7).mean()
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    second = torch.autograd.grad(loss, inputs)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    with torch.no_grad():
        assert not mixed_linear_cross_entropy(*inputs, labels, 0.42).requires_grad


def test_fused_diagnostics_and_frozen_weak(gen):
    hs, ws, hw, ww = _fused_inputs(gen, torch.float32, scale=3.0)
    labels = make_labels((S, B), V, gen)
    zs, zw = (hs @ ws.t()).double(), (hw @ ww.t()).double()
    loss, strong_ce, weak_ce = mixed_linear_cross_entropy(hs, ws, hw, ww, labels, 0.42, chunk_size=4,
                                                          return_diagnostics=True)
    assert not strong_ce.requires_grad and not weak_ce.requires_grad
    assert rel_err(loss, reference_ce(zs, zw, labels, 0.42)) <= 1e-5
    assert rel_err(strong_ce, reference_ce(zs, zw, labels, 1.0)) <= 1e-5
    assert rel_err(weak_ce, reference_ce(zs, zw, labels, 0.0)) <= 1e-5
    # weak branch frozen (no grad wanted): strong gradients unchanged, weak ones not computed
    weights = torch.rand(S, B, generator=gen)
    _, full = with_grads(lambda *x: mixed_linear_cross_entropy(*x, labels, 0.42), [hs, ws, hw, ww], weights)
    a, b = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    (mixed_linear_cross_entropy(a, b, hw, ww, labels, 0.42) * weights).sum().backward()
    assert torch.equal(a.grad, full[0]) and torch.equal(b.grad, full[1])
    # diagnostics do not change the loss or its gradients
    _, diag = with_grads(lambda *x: mixed_linear_cross_entropy(*x, labels, 0.42, return_diagnostics=True)[0],
                         [hs, ws, hw, ww], weights)
    assert all(rel_err(g, f) <= 1e-6 for g, f in zip(diag, full))


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any aten op produces while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_fused_never_materializes_token_by_vocab_logits(gen):
    """With chunk_size=c (vocab rows per block) the fused forward+backward produces no tensor larger
    than the largest of [tokens, c], a weight [V, h] and both dh [2, tokens, h] (fp32), while the
    unfused path's logits are [tokens, V] (here 16x a block)."""
    tokens, vocab, hidden, chunk = 256, 512, 16, 32
    hs, hw = (torch.randn(tokens, hidden, generator=gen, requires_grad=True) for _ in range(2))
    ws, ww = (torch.randn(vocab, hidden, generator=gen, requires_grad=True) for _ in range(2))
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    with _LargestAllocation() as fused:
        mixed_linear_cross_entropy(hs, ws, hw, ww, labels, 0.5, chunk_size=chunk).sum().backward()
    bound = 4 * max(tokens * chunk, vocab * hidden, 2 * tokens * hidden)
    assert fused.largest <= bound, f"fused produced a {fused.largest}-byte tensor (> {bound})"
    with _LargestAllocation() as unfused:
        mixed_logit_cross_entropy(hs @ ws.t(), hw @ ww.t(), labels, 0.5).sum().backward()
    assert unfused.largest >= 4 * tokens * vocab  # the check can see [tokens, V] when it exists


def test_default_chunks_fit_the_budget_in_aligned_widths():
    """chunk_size=None: the widest chunk whose buffers fit DEFAULT_CHUNK_BYTES, rounded down to a
    multiple of CHUNK_ALIGN (odd GEMM widths are slow); below CHUNK_ALIGN the fit itself."""
    from megatron_wmss.losses._common import CHUNK_ALIGN, DEFAULT_CHUNK_BYTES, MIN_CHUNK, chunk_len

    for tokens, per_elem in ((1024, 12), (2048, 4), (4096, 10), (3000, 7)):
        width = chunk_len(None, tokens, per_elem)
        assert width % CHUNK_ALIGN == 0 and width * tokens * per_elem <= DEFAULT_CHUNK_BYTES
        assert (width + CHUNK_ALIGN) * tokens * per_elem > DEFAULT_CHUNK_BYTES
    fit = DEFAULT_CHUNK_BYTES // (2 ** 20 * 4)  # 64 columns fit: fewer than CHUNK_ALIGN, kept as is
    assert chunk_len(None, 2 ** 20, 4) == fit
    assert chunk_len(None, 2 ** 30, 4) == MIN_CHUNK
    assert chunk_len(7, 1024, 4) == 7
