"""`wmss run` end to end on CPU (K=2, then K=1 from the same run directory), on packed rows (data.pack:
two samples per row, so every phase, WD-DS scoring included, runs packed); SIGKILL inside each phase and
re-running the same command finishes with the same final weights as an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_fixtures import build_setup

RECIPE = """
model:
  hf_path: {hf}
  make_vocab_size_divisible_by: 8
data:
  path: {data}
  seq_length: 128
  pack: true
training:
  global_batch_size: 4
  micro_batch_size: 1
  lr: 1.0e-3
  save_interval: 1
  tensorboard: false
  log_interval: 100
wmss:
  iterations: 2
"""
# Files that exist once a phase has made progress but (usually) before it is done.
KILL_POINTS = ["phase1_sft/checkpoints/latest", "iter_1/select/scores/rank0.jsonl", "iter_1/wdjt/checkpoints/latest",
               "iter_2/select/scores/rank0.jsonl", "iter_2/wdjt/checkpoints/latest"]


def _command(recipe, run_dir, *extra):
    return [sys.executable, "-m", "megatron_wmss.cli", "run", "--config", str(recipe), f"run_dir={run_dir}", *extra]


def _run(recipe, run_dir, *extra):
    out = subprocess.run(_command(recipe, run_dir, *extra), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def _kill_when(recipe, run_dir, marker: str) -> bool:
    """Start the run, SIGKILL its whole process group as soon as `marker` exists; True if the phase
    that marker belongs to was still unfinished at that moment."""
    proc = subprocess.Popen(_command(recipe, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    target = run_dir / marker
    phase_done = target.parents[1] / "DONE"  # <phase>/checkpoints/latest or <phase>/scores/rank0.jsonl
    deadline = time.monotonic() + 600
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    inside = target.exists() and not phase_done.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return inside


def _losses(phase_dir):
    return [json.loads(line)["loss"] for line in (phase_dir / "metrics.jsonl").read_text().splitlines()]


def _tensors(hf_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(hf_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    paths = build_setup(root, num_rows=40)
    path = root / "recipe.yaml"
    path.write_text(RECIPE.format(**paths))
    return path


def test_killed_run_resumes_to_the_same_weights(recipe, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run(recipe, reference)
    scored = (reference / "iter_1" / "select" / "scores" / "rank0.jsonl").read_text().splitlines()
    samples = len({json.loads(line)["id"] for line in scored})  # every sample scored, from packed rows
    assert json.loads((reference / "steps.json").read_text())["phase1_sft"] < samples / 4  # 4 rows a step
    kills_inside = sum(_kill_when(recipe, interrupted, marker) for marker in KILL_POINTS)
    assert kills_inside >= 3, "the runs finished their phases before the kills landed"
    _run(recipe, interrupted)
    for phase in ("phase1_sft", "iter_1/wdjt", "iter_2/wdjt"):  # loss sequences: bitwise identical
        assert _losses(interrupted / phase) == _losses(reference / phase), phase
    want, got = _tensors(reference / "wmss_hf"), _tensors(interrupted / "wmss_hf")
    assert want.keys() == got.keys()
    for name in want:
        assert got[name].equal(want[name]), name
    # K=1 from the same directory: every phase is done, the iteration-1 strong branch is exported
    shutil.copytree(reference, tmp_path / "k1")
    out = _run(recipe, tmp_path / "k1", "wmss.iterations=1", "eval.enabled=true", "eval.benchmarks=[gsm8k]",
               "eval.limit=2", "eval.max_new_tokens=3")
    assert "training in" not in out
    source = (tmp_path / "k1" / "wmss_hf" / "SOURCE").read_text()
    assert source.endswith("iter_1/wdjt/export/strong")
    assert not _tensors(tmp_path / "k1" / "wmss_hf")["model.norm.weight"].equal(want["model.norm.weight"])
    # eval.enabled: the recipe's eval section reaches `wmss eval` (backend auto -> transformers on CPU)
    summary = json.loads((tmp_path / "k1" / "eval" / "wmss" / "summary.json").read_text())
    assert summary["benchmarks"]["gsm8k"]["problems"] == 2
    assert summary["benchmarks"]["gsm8k"]["max_new_tokens"] == 3
