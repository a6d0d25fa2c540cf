"""benchmarks/gpu_acceptance.py's CPU smoke: the tiny pipeline and the throughput code run for real on
CPU, the GPU-only checks are recorded as skipped (not failed), and the report is complete JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_ONLY = ("te_layer_spec_bf16", "te_layer_spec_fp8", "wdjt_tp2", "mixed_loss_bf16", "wdjt_1b_fp8")
RUN_ON_CPU = ("tiny_setup", "wmss_run_tp1", "wdjt_tp1", "wdds_scoring", "hf_export", "vllm_gsm8k", "wdjt_1b_bf16")


def test_cpu_smoke_report(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--cpu-smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    report = json.loads((tmp_path / "report.json").read_text())
    checks = report["checks"]
    assert set(checks) == set(GPU_ONLY) | set(RUN_ON_CPU)
    failed = {name: check.get("error") for name, check in checks.items() if check["status"] == "fail"}
    assert not failed and proc.returncode == 0, (failed, proc.stdout[-2000:])
    for name in GPU_ONLY:
        assert checks[name]["status"] == "skipped" and "CUDA" in checks[name]["reason"], name
    for name in RUN_ON_CPU:
        assert checks[name]["status"] == "pass", name
    assert checks["wdjt_tp1"]["result"]["steps"] == 3
    assert checks["wdds_scoring"]["result"]["num_samples"] > 0
    assert checks["vllm_gsm8k"]["result"]["backend"] == "transformers"
    assert checks["vllm_gsm8k"]["result"]["problems"] == 2
    throughput = checks["wdjt_1b_bf16"]["result"]
    assert throughput["tokens_per_s"] > 0 and "mfu_vs_dense_bf16_peak" not in throughput  # no peak on CPU
