"""The paper's baselines as train modules (App. E.6). NEFTune: uniform embedding noise of magnitude
alpha/sqrt(L*d), only in training. UNDIAL: the CE against softmax(z_ref - delta*onehot(y)) and its
gradients equal a float64 reference. Both train at TP=2 (also with sequence parallelism, where NEFTune
adds each rank's slice of the row's noise) and PP=2 as in one process (3 steps)."""

import math

import pytest
import torch

from megatron_wmss.testing import run_ranks
from megatron_wmss.training.neftune import NEFTune, NEFTuneConfig, neftune_noise
from megatron_wmss.training.undial import UNDIALConfig, undial_cross_entropy, undial_penalty
from tests.training_helpers import init_checkpoints_rank, load_exported_rank, read_metrics, train_runs_rank

LR = 1e-3  # training_helpers.make_config


def test_neftune_noise_is_uniform_with_the_papers_magnitude():
    length, batch, dim, alpha = 64, 3, 48, 5.0
    noise = neftune_noise(["a", "b", "c"], (length, batch, dim), alpha, seed=1, step=0).double()
    bound = alpha / math.sqrt(length * dim)  # NEFTune: alpha / sqrt(L d)
    assert noise.abs().max() <= bound and noise.abs().max() > 0.99 * bound
    assert noise.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-b, b): std b/sqrt(3)
    assert abs(noise.mean().item()) < 0.05 * bound
    # a sample's noise depends on its id and the step, not on its place in the micro-batch
    again = neftune_noise(["c", "a"], (length, 2, dim), alpha, seed=1, step=0)
    assert torch.equal(again[:, 1], noise[:, 0].float()) and torch.equal(again[:, 0], noise[:, 2].float())
    assert not torch.equal(neftune_noise(["a"], (length, 1, dim), alpha, seed=1, step=1)[:, 0], noise[:, 0].float())


def test_neftune_adds_noise_only_in_training():
    module = NEFTune(NEFTuneConfig(alpha=5.0), seed=3)
    module._sample_ids, module.step = ["x", "y"], 4
    embedding = torch.nn.Identity()
    out = torch.randn(10, 2, 16)
    embedding.train()
    noisy = module._add_noise(embedding, (), out)
    torch.testing.assert_close(noisy - out, neftune_noise(["x", "y"], (10, 2, 16), 5.0, seed=3, step=4))
    embedding.eval()
    assert module._add_noise(embedding, (), out) is out


def _undial_reference(h, w, h_ref, w_ref, labels, delta, vocab):
    """Full logits over the real vocabulary, float64, straight from UNDIAL's definition."""
    z, z_ref = h @ w[:vocab].t(), h_ref @ w_ref[:vocab].t()
    adjusted = z_ref - delta.unsqueeze(-1) * torch.nn.functional.one_hot(labels.clamp_min(0), vocab)
    soft = torch.softmax(adjusted, -1)
    loss = -(soft * torch.log_softmax(z, -1)).sum(-1)
    return torch.where(labels >= 0, loss, torch.zeros_like(loss))


def test_undial_loss_and_gradients_match_float64_reference():
    gen = torch.Generator().manual_seed(0)
    s, b, hid, vocab, padded = 5, 2, 6, 21, 24
    h = torch.randn(s, b, hid, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(padded, hid, generator=gen, dtype=torch.float64, requires_grad=True)
    h_ref, w_ref = torch.randn(s, b, hid, generator=gen, dtype=torch.float64), torch.randn(padded, hid, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        w[vocab:] = 50.0  # padding rows: in no softmax
        w_ref[vocab:] = 50.0
    labels = torch.randint(0, vocab, (s, b), generator=gen)
    labels[0, 1] = -100
    mask = torch.ones(b, s)
    delta = undial_penalty(["p", "q"], mask, UNDIALConfig(strength=2.0, noise_scale=1.0), seed=0, step=0)
    assert delta.std() > 0 and delta.mean().item() == pytest.approx(2.0, abs=1.0)
    loss, ce = undial_cross_entropy(h, w, h_ref, w_ref, labels, delta, vocab_size=vocab)
    want = _undial_reference(h, w, h_ref, w_ref, labels, delta, vocab)
    torch.testing.assert_close(loss, want)
    plain = -torch.log_softmax(h @ w[:vocab].t(), -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ce, torch.where(labels >= 0, plain, torch.zeros_like(plain)))
    got = torch.autograd.grad(loss.sum(), (h, w))
    ref = torch.autograd.grad(want.sum(), (h, w))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_undial_without_noise_is_a_constant_penalty():
    delta = undial_penalty(["p"], torch.ones(1, 4), UNDIALConfig(strength=1.5, noise_scale=0.0), seed=0, step=0)
    assert torch.equal(delta, torch.full((4, 1), 1.5, dtype=torch.float64))


OBJECTIVES = ("neftune", "undial")
LAYOUTS = {"tp2": dict(tp=2), "tp2sp": dict(tp=2, **{"parallel.sequence_parallel": "true"}), "pp2": dict(pp=2)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("baselines")
    run_ranks(init_checkpoints_rank, 1, str(path))
    single = [(f"{o}_ref", o, {}) for o in OBJECTIVES] + [("sft_ref", "sft", {})]
    run_ranks(train_runs_rank, 1, str(path), single)
    runs = [(f"{o}_{name}", o, layout) for o in OBJECTIVES for name, layout in LAYOUTS.items()]
    run_ranks(train_runs_rank, 2, str(path), runs, timeout_s=600)
    return path


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_baselines_train_at_tp2_and_pp2_as_in_one_process(workdir, objective):
    reference = [m["loss"] for m in read_metrics(workdir / f"{objective}_ref")]
    sft = [m["loss"] for m in read_metrics(workdir / "sft_ref")]
    assert reference[0] != pytest.approx(sft[0], rel=1e-4)  # the noise / the adjusted target is active
    paths = [str(workdir / f"{objective}_{name}" / "export" / "model") for name in ("ref", *LAYOUTS)]
    params = run_ranks(load_exported_rank, 1, paths)[0]
    for name in LAYOUTS:
        run = f"{objective}_{name}"
        assert [m["loss"] for m in read_metrics(workdir / run)] == pytest.approx(reference, rel=1e-6), run
        for key, want in params[paths[0]].items():
            diff = (params[str(workdir / run / "export" / "model")][key] - want).abs().max().item()
            assert diff <= 1e-2 * LR, f"{run} {key}: max |difference| {diff:.2e}"
