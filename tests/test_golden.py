"""Golden numbers: a fixed tiny `wmss run` (Phase 1 SFT, WD-DS, WD-JT) and its SFT baseline must give
the loss sequences and the active set recorded in tests/golden/run.json (recorded on the code before the
architecture step of issue 15; rerecord only for an intended change of the numbers:
`PYTHONPATH=. python -m tests.test_golden`).

Everything must agree bitwise: SFT's plain fused cross-entropy (`linear_cross_entropy`) runs the float
operations the mixed kernel ran at lambda = 1 (whose weak GEMMs were skipped), and no other computation
changed. (A deliberate kernel change may relax the loss sequences to 1e-6 relative, never the active set.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.pipeline_fixtures import build_setup

GOLDEN = Path(__file__).parent / "golden" / "run.json"
RECIPE = """
model:
  hf_path: {hf}
  make_vocab_size_divisible_by: 8
data:
  path: {data}
  seq_length: 48
training:
  global_batch_size: 4
  micro_batch_size: 2
  lr: 1.0e-3
  tensorboard: false
  log_interval: 100
wmss:
  iterations: 1
  sft_steps: 3
  wdjt_steps: 3
  baseline_steps: 4
"""


def _losses(phase: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (phase / "metrics.jsonl").read_text().splitlines()]


def golden_run(root: Path) -> dict:
    """Run the fixed recipe (WMSS, then the SFT baseline) under `root`; return its numbers."""
    paths = build_setup(root, num_rows=16)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(**paths))
    run_dir = root / "run"
    # The two commands share run_dir (M0 converted once, under its lock) and run side by side, as
    # `wmss run` allows: each is one single-threaded process, so the numbers do not depend on it.
    runs = {}
    for name, extra in (("wmss", []), ("baseline", ["--baseline", "sft"])):
        with open(root / f"{name}.log", "w") as log:
            runs[name] = subprocess.Popen([sys.executable, "-m", "megatron_wmss.cli", "run", "--config", str(recipe),
                                           f"run_dir={run_dir}", *extra], stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
    try:
        for name, proc in runs.items():
            assert proc.wait(timeout=600) == 0, (root / f"{name}.log").read_text()[-6000:]
    finally:
        for proc in runs.values():  # a failed or timed-out run: stop it with its subprocesses
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wdjt = run_dir / "iter_1" / "wdjt"
    return {"phase1_sft": _losses(run_dir / "phase1_sft"), "wdjt": _losses(wdjt),
            "wdjt_strong_ce": _losses(wdjt, "strong_ce"), "wdjt_weak_ce": _losses(wdjt, "weak_ce"),
            "baseline_sft": _losses(run_dir / "baseline_sft"),
            "active_set": (run_dir / "iter_1" / "select" / "active_set.txt").read_text().split()}


def test_golden_run_reproduces_the_recorded_numbers(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = golden_run(tmp_path)
    assert got["active_set"] == want["active_set"]
    for key in ("phase1_sft", "wdjt", "wdjt_strong_ce", "wdjt_weak_ce", "baseline_sft"):
        assert len(got[key]) == len(want[key]), key
        assert got[key] == want[key], key


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        numbers = golden_run(Path(tmp))
    GOLDEN.write_text(json.dumps(numbers, indent=1) + "\n")
    print(json.dumps(numbers))
