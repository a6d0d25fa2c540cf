"""Preference losses: `dpo_loss` and `orpo_odds_ratio_loss` against float64/mpmath references written
from the papers' formulas and hand values; `sequence_log_probs` against a float64 log-softmax reference
at TP = 1 and TP = 2 (real gloo ranks), with the losses on top."""

import math

import mpmath
import pytest
import torch

from megatron_wmss.losses import dpo_loss, orpo_odds_ratio_loss, sequence_log_probs
from megatron_wmss.testing import run_ranks

mpmath.mp.dps = 50


def ref_dpo(pc, pr, rc, rr, beta, eps):
    """cDPO in mpmath: -(1-eps) log sigmoid(h) - eps log sigmoid(-h), h = beta * (margin of log-ratios)."""
    h = mpmath.mpf(beta) * ((mpmath.mpf(pc) - rc) - (mpmath.mpf(pr) - rr))
    log_sig = lambda x: -mpmath.log(1 + mpmath.exp(-x))  # noqa: E731
    return float(-(1 - mpmath.mpf(eps)) * log_sig(h) - mpmath.mpf(eps) * log_sig(-h))


def ref_orpo(c, r):
    """ORPO Eq. 4-7 in mpmath: P = exp(mean log-prob), odds = P / (1 - P)."""
    pc, pr = mpmath.exp(mpmath.mpf(c)), mpmath.exp(mpmath.mpf(r))
    ratio = mpmath.log(pc / (1 - pc)) - mpmath.log(pr / (1 - pr))
    return float(mpmath.log(1 + mpmath.exp(-ratio)))


def _inputs(gen, n=64, scale=30.0):
    return [-scale * torch.rand(n, generator=gen, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_loss_matches_reference(beta, eps):
    pc, pr, rc, rr = _inputs(torch.Generator().manual_seed(int(beta * 100) + int(eps * 10)))
    got = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)
    want = torch.tensor([ref_dpo(*vals, beta, eps) for vals in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())],
                        dtype=torch.float64)
    assert got.shape == (64,) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    got32 = dpo_loss(*(x.float() for x in (pc, pr, rc, rr)), beta, label_smoothing=eps)
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-6)


def test_dpo_loss_hand_values():
    zero = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(dpo_loss(zero, zero, zero, zero, 0.1), torch.full((3,), math.log(2), dtype=torch.float64))
    # h = 0.5 * ((-1 - -2) - (-3 - -2)) = 1: loss = log(1 + e^-1); eps = 0.25 mixes in log(1 + e)
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    assert dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5).item() == pytest.approx(math.log1p(math.exp(-1)))
    assert dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5, label_smoothing=0.25).item() == pytest.approx(
        0.75 * math.log1p(math.exp(-1)) + 0.25 * math.log1p(math.e))
    # a huge margin: no overflow, the loss tends to 0 (chosen side) or the margin (rejected side)
    assert dpo_loss(t(0.0), t(-1e4), t(0.0), t(0.0), 1.0).item() == 0.0
    assert dpo_loss(t(-1e4), t(0.0), t(0.0), t(0.0), 1.0).item() == pytest.approx(1e4)


def test_dpo_loss_rejects_bad_settings():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="preference.beta"):
        dpo_loss(x, x, x, x, 0.0)
    with pytest.raises(ValueError, match="preference.label_smoothing"):
        dpo_loss(x, x, x, x, 0.1, label_smoothing=0.5)


def test_orpo_matches_reference_over_the_range():
    """Mean log-probs from -50 to -1e-9 (P from ~0 to ~1, where a naive log(1 - exp(x)) loses all digits)."""
    c = -torch.logspace(-9, math.log10(50), 40, dtype=torch.float64)
    r = c.flip(0)
    got = orpo_odds_ratio_loss(c, r)
    want = torch.tensor([ref_orpo(a, b) for a, b in zip(c.tolist(), r.tolist())], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got32 = orpo_odds_ratio_loss(c.float().clamp(max=-1e-6), r.float().clamp(max=-1e-6))
    want32 = torch.tensor([ref_orpo(a, b) for a, b in zip(c.clamp(max=-1e-6).float().tolist(),
                                                           r.clamp(max=-1e-6).float().tolist())])
    torch.testing.assert_close(got32, want32, rtol=1e-4, atol=1e-5)


def test_orpo_hand_values_and_gradient():
    t = lambda *v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731
    # P = 1/2 (odds 1) vs P = 1/4 (odds 1/3): log odds ratio log 3, loss -log(3/4)
    c, r = t(math.log(0.5), -2.0), t(math.log(0.25), -2.0)
    loss = orpo_odds_ratio_loss(c, r)
    assert loss.tolist() == pytest.approx([math.log(4 / 3), math.log(2)])
    loss.sum().backward()
    # d/dx log odds = 1 / (1 - e^x); dL/dc = -(1 - sigmoid(ratio)) / (1 - P_c)
    assert c.grad[0].item() == pytest.approx(-(1 - 0.75) / 0.5)
    assert r.grad[0].item() == pytest.approx((1 - 0.75) / 0.75)
    assert torch.isfinite(orpo_odds_ratio_loss(t(-1e-12), t(-40.0))).all()


# ---------------------------------------------------------------- sequence log-probs, TP = 1 and 2

S, B, V, H = 7, 4, 48, 8


def _data():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, V, (S, B), generator=gen)
    labels[:2] = -100  # prompt
    labels[5:, 1] = -100  # a shorter sequence
    return dict(h=torch.randn(S, B, H, generator=gen, dtype=torch.float64),
                w=2 * torch.randn(V, H, generator=gen, dtype=torch.float64), labels=labels)


def _reference_logps(d):
    logp = torch.log_softmax(d["h"] @ d["w"].T, dim=-1)
    valid = d["labels"] != -100
    picked = logp.gather(-1, d["labels"].clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, picked, torch.zeros_like(picked)).sum(0), valid.sum(0)


def _logps_and_losses(d, shard, group):
    h = d["h"].clone().requires_grad_(True)
    logps = sequence_log_probs(h, d["w"][shard], d["labels"], group, chunk_size=5)
    chosen, rejected = logps[0::2], logps[1::2]
    counts = (d["labels"] != -100).sum(0)
    dpo = dpo_loss(chosen, rejected, chosen.detach() + 0.3, rejected.detach() - 0.2, 0.1, label_smoothing=0.1)
    orpo = orpo_odds_ratio_loss(chosen / counts[0::2], rejected / counts[1::2])
    (dpo.sum() + orpo.sum()).backward()
    return dict(logps=logps.detach(), dpo=dpo.detach(), orpo=orpo.detach(), dh=h.grad)


def tp_rank(d):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, per = dist.get_rank(), V // dist.get_world_size()
    out = _logps_and_losses(d, slice(rank * per, (rank + 1) * per), dist.group.WORLD)
    dist.destroy_process_group()
    return out


def test_sequence_log_probs_tp1_tp2_match_float64_reference():
    d = _data()
    ref_logps, counts = _reference_logps(d)
    single = _logps_and_losses(d, slice(None), None)
    torch.testing.assert_close(single["logps"], ref_logps, rtol=1e-12, atol=1e-12)
    ref_dpo_vals = [ref_dpo(c, r, c + 0.3, r - 0.2, 0.1, 0.1) for c, r in zip(ref_logps[0::2].tolist(), ref_logps[1::2].tolist())]
    torch.testing.assert_close(single["dpo"], torch.tensor(ref_dpo_vals, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    mean = ref_logps / counts
    ref_orpo_vals = [ref_orpo(c, r) for c, r in zip(mean[0::2].tolist(), mean[1::2].tolist())]
    torch.testing.assert_close(single["orpo"], torch.tensor(ref_orpo_vals, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    for rank_out in run_ranks(tp_rank, 2, d):
        for key in ("logps", "dpo", "orpo", "dh"):
            torch.testing.assert_close(rank_out[key], single[key], rtol=1e-10, atol=1e-12)
