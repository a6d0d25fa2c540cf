"""benchmarks/vs_reference.py: its reference step computes the paper's mixed-logit loss (Eq. 5-6, checked
against float64) and trains both models; the whole comparison runs end to end in its smoke mode."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.vs_reference import reference_loss, reference_models  # noqa: E402


def test_reference_loss_is_the_mixed_logit_cross_entropy():
    args = SimpleNamespace(vocab=50, hidden=16, ffn=32, layers=1, heads=2, seq=8)
    strong, weak = reference_models(args, "cpu")
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    labels = tokens.roll(-1, dims=1)
    labels[:, :3] = -100
    loss = reference_loss(strong, weak, tokens, labels, lam=0.3)
    loss.backward()

    with torch.no_grad():
        z = 0.3 * strong(input_ids=tokens).logits.double() + 0.7 * weak(input_ids=tokens).logits.double()
        logp = torch.log_softmax(z, dim=-1)
        keep = labels != -100
        expected = -logp[keep].gather(-1, labels[keep].unsqueeze(-1)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-6)
    for model in (strong, weak):  # the reference trains both branches
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_smoke_run_reports_both_variants(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = tmp_path / "vs_reference.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_reference.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"reference", "ours"}
    assert results["reference"]["supervised_tokens"] == results["ours"]["supervised_tokens"] > 0  # the same batch
    for result in results.values():
        assert result["seconds"] > 0 and result["cpu_seconds"] > 0 and result["peak_bytes"] > 0
    assert set(report["ratios"]) == {"step_time_cpu", "step_time_wall", "peak_memory"}
    assert "ours / reference step time" in proc.stdout and "ours / reference peak memory" in proc.stdout
