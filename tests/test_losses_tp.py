"""WMSS losses at TP = 2 and TP = 4 on real gloo ranks equal TP = 1 on the same full-vocab tensors and
the float64 reference: mixed-logit CE (values and both logit-shard gradients), the fused variant (values,
dh, and each rank's dW shard), entropy from logits and from hidden states. At TP = 2 the default group
comes from megatron parallel_state (distributed.initialize) and lam = 1 / lam = 0 are checked against
megatron-core's vocab_parallel_cross_entropy; the TP = 4 run passes a plain gloo group explicitly
(and skips importing megatron-core, which costs ~10 s of CPU per rank).
"""

import pytest
import torch

from megatron_wmss.testing import run_ranks
from tests.test_losses import (
    make_labels,
    make_logits,
    reference_ce,
    reference_entropy,
    rel_err,
    with_grads,
)

LAMS = [0.0, 0.42, 0.5, 1.0]
S, B, V, H = 5, 3, 96, 16  # V divisible by 2 and 4


def make_data(seed=7):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        zs=make_logits("offset100", (S, B, V), gen), zw=make_logits("scale100", (S, B, V), gen),
        labels=make_labels((S, B), V, gen), weights=torch.rand(S, B, generator=gen),
        hs=torch.randn(S, B, H, generator=gen), hw=torch.randn(S, B, H, generator=gen),
        ws=3 * torch.randn(V, H, generator=gen), ww=3 * torch.randn(V, H, generator=gen))


def compute_all(d, shard, tp_group=None):
    """Every loss on vocab slice `shard` of the full tensors in `d` (TP=1: the whole vocabulary)."""
    from megatron_wmss.losses import (
        linear_vocab_parallel_entropy,
        mixed_linear_cross_entropy,
        mixed_logit_cross_entropy,
        vocab_parallel_entropy,
    )

    zs, zw, ws, ww = d["zs"][..., shard], d["zw"][..., shard], d["ws"][shard], d["ww"][shard]
    labels, weights = d["labels"], d["weights"]
    out = {}
    for lam in LAMS:
        out["mixed", lam] = with_grads(
            lambda a, b: mixed_logit_cross_entropy(a, b, labels, lam, tp_group, chunk_size=3), [zs, zw], weights)
        out["fused", lam] = with_grads(
            lambda *x: mixed_linear_cross_entropy(*x, labels, lam, tp_group, chunk_size=3),
            [d["hs"], ws, d["hw"], ww], weights)
    out["fused_partial_dh"] = with_grads(
        lambda *x: mixed_linear_cross_entropy(*x, labels, 0.42, tp_group, reduce_hidden_grad=False),
        [d["hs"], ws, d["hw"], ww], weights)
    out["diagnostics"] = mixed_linear_cross_entropy(d["hs"], ws, d["hw"], ww, labels, 0.42, tp_group,
                                                    return_diagnostics=True)
    out["entropy"] = vocab_parallel_entropy(zs, tp_group, chunk_size=4)
    out["linear_entropy"] = linear_vocab_parallel_entropy(d["hs"], ws, tp_group, chunk_size=4)
    return out


def _shard(tp, rank):
    per = V // tp
    return slice(rank * per, (rank + 1) * per)


def tp_rank(tp, d, use_megatron):
    import torch.distributed as dist

    if use_megatron:  # default group: megatron's tensor-model-parallel group
        from megatron_wmss import distributed

        layout = distributed.initialize(tp=tp)
        assert layout.tp == tp
        rank, group = layout.tp_rank, None
    else:
        dist.init_process_group("gloo")
        rank, group = dist.get_rank(), dist.group.WORLD
    out = compute_all(d, _shard(tp, rank), group)
    if use_megatron:  # lam = 1 / 0 against megatron-core's vocab_parallel_cross_entropy on that model
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        for lam, key in ((1.0, "zs"), (0.0, "zw")):
            logits = d[key][..., _shard(tp, rank)]
            labels = d["labels"].clamp_min(0)  # megatron has no ignore index: mask afterwards
            mask = (d["labels"] != -100).float()
            out["megatron", lam] = with_grads(
                lambda z: vocab_parallel_cross_entropy(z.clone(), labels) * mask, [logits], d["weights"])
    else:
        dist.destroy_process_group()
    return out


@pytest.fixture(scope="module")
def single():
    d = make_data()
    return d, compute_all(d, slice(None))


@pytest.mark.parametrize("tp,use_megatron", [(2, True), (4, False)])
def test_tp_equals_single_process(single, tp, use_megatron):
    d, one = single
    ranks = run_ranks(tp_rank, tp, tp, d, use_megatron)
    tol = 1e-6
    for lam in LAMS:
        ref, ref_grads = with_grads(lambda a, b: reference_ce(a, b, d["labels"], lam),
                                    [d["zs"].double(), d["zw"].double()], d["weights"].double())
        (loss1, grads1), (floss1, fgrads1) = one["mixed", lam], one["fused", lam]
        for rank, out in enumerate(ranks):
            sl = _shard(tp, rank)
            loss, grads = out["mixed", lam]
            assert rel_err(loss, loss1) <= tol and rel_err(loss, ref) <= tol, (rank, lam)
            for g, g1, rg in zip(grads, grads1, ref_grads):
                if lam in (0.0, 1.0) and rg.abs().max() == 0:
                    assert (g == 0).all()
                    continue
                assert rel_err(g, g1[..., sl]) <= tol and rel_err(g, rg[..., sl]) <= tol, (rank, lam)
            floss, (dhs, dws, dhw, dww) = out["fused", lam]
            assert rel_err(floss, floss1) <= tol, (rank, lam)
            for got, want in ((dhs, fgrads1[0]), (dws, fgrads1[1][sl]), (dhw, fgrads1[2]), (dww, fgrads1[3][sl])):
                if want.abs().max() == 0:
                    assert (got == 0).all()
                else:
                    assert rel_err(got, want) <= tol, (rank, lam)
    # reduce_hidden_grad=False: each rank's dh is its vocab slice's share; their sum is the full dh
    _, partial_grads = zip(*(out["fused_partial_dh"] for out in ranks))
    _, full_grads = one["fused_partial_dh"]
    for i in (0, 2):
        # fp32 row sums in the fused kernel: parallel vs single-process gradient tolerance (foundation issue)
        assert rel_err(sum(g[i] for g in partial_grads), full_grads[i]) <= 1e-5
        assert rel_err(partial_grads[0][i], full_grads[i]) > 1e-3  # a slice alone is not the full dh
    for out in ranks:
        for got, want in zip(out["diagnostics"], one["diagnostics"]):
            assert rel_err(got, want) <= tol
        assert rel_err(out["entropy"], one["entropy"]) <= tol
        assert rel_err(out["entropy"], reference_entropy(d["zs"])) <= tol
        assert rel_err(out["linear_entropy"], one["linear_entropy"]) <= tol
    if use_megatron:
        for lam in (1.0, 0.0):
            loss1, grads1 = one["mixed", lam]
            for rank, out in enumerate(ranks):
                loss, (grad,) = out["megatron", lam]
                assert rel_err(loss, loss1) <= tol, (rank, lam)
                assert rel_err(grad, grads1[0 if lam == 1.0 else 1][..., _shard(tp, rank)]) <= tol, (rank, lam)
