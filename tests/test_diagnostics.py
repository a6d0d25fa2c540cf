"""`wmss diagnose` statistics (App. B.4, Tables 6-7; Eq. 17, 48) equal a float64 full-vocab reference:
the vocab-parallel kernel on random logits (one process, and TP=2 with padding on the last rank), and the
whole pass over a tiny model's samples at TP=1, TP=2 and PP=2; lambda_cross reproduces the paper's 0.490."""

from pathlib import Path

import pytest
import torch

from megatron_wmss.diagnostics.statistics import lambda_cross
from megatron_wmss.testing import run_ranks
from tests.training_helpers import TINY_QWEN3, ToySFTDataset, init_checkpoints_rank, make_config

VOCAB, PADDED, HIDDEN, N = 45, 48, 8, 7  # 3 rows of TP padding, all on the last rank at TP=2
PINNED = ("target_logit_mean", "distractor_logit_mean", "gap", "logit_std", "centered_norm", "max_logit",
          "min_logit", "l2_norm", "entropy", "max_prob")


def reference_statistics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per position, float64, from full logits [N, V] (no padding) written out from the definitions."""
    z = logits.double()
    v = z.shape[-1]
    target = z[torch.arange(len(labels)), labels]
    others = torch.ones_like(z, dtype=torch.bool)
    others[torch.arange(len(labels)), labels] = False
    mean = z.mean(-1)
    centered = z - mean[:, None]
    p = torch.softmax(z, -1)
    distractor = torch.stack([z[i][others[i]].mean() for i in range(len(labels))])
    return {"target_logit_mean": target, "distractor_logit_mean": distractor, "gap": target - distractor,
            "logit_mean": mean, "logit_std": z.std(-1, unbiased=False), "centered_norm": centered.norm(dim=-1),
            "l2_norm": z.norm(dim=-1), "entropy": -(p * torch.log(p)).sum(-1), "max_prob": p.max(-1).values,
            "max_logit": z.max(-1).values, "min_logit": z.min(-1).values}


def _inputs():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(N, HIDDEN, generator=gen)
    w = torch.randn(PADDED, HIDDEN, generator=gen) * 3
    w[VOCAB:] = 100.0  # padding rows with huge logits: they must not reach any statistic
    labels = torch.randint(0, VOCAB, (N,), generator=gen)
    return h, w, labels


def kernel_rank(tp):
    """TP=1: this process, no process group; TP=2: one rank of two, each holding half of the rows."""
    from megatron_wmss import distributed
    from megatron_wmss.diagnostics.statistics import position_statistics

    layout = distributed.initialize(tp=tp) if tp > 1 else None
    h, w, labels = _inputs()
    size, rank = PADDED // tp, layout.tp_rank if layout else 0
    stats = position_statistics(h, w[rank * size:(rank + 1) * size], labels, vocab_size=VOCAB, chunk_size=3)
    if layout:
        distributed.destroy()
    return stats


@pytest.mark.parametrize("tp", [1, 2])
def test_kernel_matches_reference(tp):
    h, w, labels = _inputs()
    want = reference_statistics(h @ w[:VOCAB].t(), labels)
    for got in (run_ranks(kernel_rank, tp, tp) if tp > 1 else [kernel_rank(1)]):
        assert got.keys() == want.keys()
        for key, ref in want.items():
            torch.testing.assert_close(got[key], ref, rtol=1e-6, atol=1e-6, msg=key)


def test_lambda_cross_reproduces_the_paper():
    alpha, lam = lambda_cross(1191.33, 1240.10)  # App. D: weak init vs strong before WD-JT
    assert alpha == pytest.approx(1.0836, abs=1e-4) and lam == pytest.approx(0.490, abs=5e-4)


NUM = 9  # of 10 toy samples: the draw is a real subset


def reference_rank(workdir):
    """Megatron fp32 logits at TP=1 of the drawn samples, statistics in float64 over the real vocab."""
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.diagnostics.run import draw_samples
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize()
    tcfg, arch = transformer_config_from_hf(TINY_QWEN3, make_vocab_size_divisible_by=8)
    dataset, out = ToySFTDataset(10), {}
    for name in ("strong", "weak"):
        model = build_gpt_model(tcfg, arch)
        load_model(model, f"{workdir}/{name}")
        model.eval()
        logits, labels = [], []
        for i in draw_samples(len(dataset), NUM, seed=5):
            row = dataset[i]
            with torch.no_grad():
                z = model(row["tokens"][None], row["position_ids"][None], attention_mask=None)[0]
            mask = row["loss_mask"] > 0
            logits.append(z[mask, :arch.vocab_size])
            labels.append(row["labels"][mask])
        per = reference_statistics(torch.cat(logits), torch.cat(labels))
        out[name] = {k: v.mean().item() for k, v in per.items()}
        out[name].update(max_logit_extreme=per["max_logit"].max().item(), min_logit_extreme=per["min_logit"].min().item(),
                         positions=len(per["entropy"]))
    distributed.destroy()
    return out


def diagnose_rank(workdir, layouts, with_reference=False):
    """`diagnose` at each layout; with_reference (one process): the reference too, as "reference"."""
    from megatron.core import parallel_state

    from megatron_wmss import distributed
    from megatron_wmss.diagnostics.run import diagnose

    results = {}
    for name, (tp, pp) in layouts.items():
        cfg = make_config(Path(workdir) / name, "sft", tp, pp, **{"training.micro_batch_size": 2})
        distributed.initialize(tp=tp, pp=pp)
        results[name] = diagnose(cfg, dataset=ToySFTDataset(10), hf_config=TINY_QWEN3,
                                 models={"weak": f"{workdir}/weak", "strong": f"{workdir}/strong"},
                                 weak="weak", strong="strong", num_samples=NUM, seed=5)
        parallel_state.destroy_model_parallel()
    distributed.destroy()
    if with_reference:
        results["reference"] = reference_rank(workdir)
    return results


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("diagnose")
    run_ranks(init_checkpoints_rank, 1, str(workdir))
    results = run_ranks(diagnose_rank, 1, str(workdir), {"tp1": (1, 1)}, with_reference=True)[0]
    reference = results.pop("reference")
    results.update(run_ranks(diagnose_rank, 2, str(workdir), {"tp2": (2, 1), "pp2": (1, 2), "dp2": (1, 1)})[0])
    return reference, results


@pytest.mark.parametrize("layout", ["tp1", "tp2", "pp2", "dp2"])
def test_diagnose_matches_float64_reference(diagnosed, layout):
    reference, results = diagnosed
    got = results[layout]
    for name in ("weak", "strong"):
        assert got["models"][name]["positions"] == reference[name]["positions"]
        for key, want in reference[name].items():
            assert got["models"][name][key] == pytest.approx(want, rel=1e-5, abs=1e-6), (name, key)
        assert set(PINNED) <= set(got["models"][name])
    ref_alpha, ref_lam = lambda_cross(reference["weak"]["centered_norm"], reference["strong"]["centered_norm"])
    assert got["lambda_cross"] == pytest.approx(ref_lam, rel=1e-5)
    assert got["entropy_separation"] == pytest.approx(reference["weak"]["entropy"] - reference["strong"]["entropy"],
                                                      rel=1e-5, abs=1e-6)


def test_markdown_has_deltas_and_lambda_cross():
    from megatron_wmss.diagnostics.report import markdown

    stats = {k: 1.0 for k in PINNED}
    models = {"weak": dict(stats, positions=5), "strong_before": dict(stats, positions=5),
              "strong_after": dict(stats, distractor_logit_mean=0.5, positions=5)}
    text = markdown({"models": models, "weak": "weak", "strong": "strong_before", "entropy_separation": 0.1,
                     "alpha": 1.0836, "lambda_cross": 0.49, "samples": ["a"] * 3, "seed": 0})
    assert "Δ `strong_after` − `strong_before`" in text and "-0.5 (-50.0%)" in text
    assert "λ_cross = 1 / (1 + √α) = 0.490" in text


def test_bad_model_option_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "megatron_wmss.cli", "diagnose", "--model", "no-equals-sign",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--model: expected NAME=CHECKPOINT" in out.stderr
    assert "Traceback" not in out.stderr
