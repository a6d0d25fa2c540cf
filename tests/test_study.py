"""`wmss study` end to end on CPU (a tiny model and task): equal steps in every arm, the random arm's
subset size, CIs and paired differences, a failed arm reported (not hidden), resume, and the logit
diagnostics of every arm in study.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pipeline_fixtures import arithmetic_rows, build_setup

RECIPE = """
model:
  hf_path: {hf}
  make_vocab_size_divisible_by: 8
data:
  path: {data}
  seq_length: 48
training:
  global_batch_size: 4
  micro_batch_size: 4
  lr: 1.0e-3
  tensorboard: false
  log_interval: 100
wmss:
  sft_steps: 6
  weak: phase1_step:2
study:
  arms: [sft, random, wdjt]
  seeds: [1, 2]
  stage_steps: 3
  heldout_data: {data}
  benchmark_file: toy={bench}
eval:
  max_new_tokens: 4
  batch_size: 16
  grade_workers: 1
"""


def _study(recipe, out, *extra):
    cmd = [sys.executable, "-m", "megatron_wmss.cli", "study", "--config", str(recipe), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    paths = build_setup(root, num_rows=24)
    bench = root / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i}", "problem": r["messages"][0]["content"],
                                         "answer": r["messages"][0]["info"]["reference_answer"],
                                         "subset": "hard" if i % 3 == 0 else "easy"}) + "\n"
                             for i, r in enumerate(arithmetic_rows(12, seed=5))))
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(bench=bench, **paths))
    out = root / "out"
    # A broken random subset for seed 2 (an id the data does not hold): that arm must fail, alone.
    (out / "select" / "seed_2").mkdir(parents=True)
    (out / "select" / "seed_2" / "random_set.txt").write_text("no-such-sample\n")
    first = _study(recipe, out)
    return {"recipe": recipe, "out": out, "first": first, "result": json.loads((out / "study.json").read_text())}


def test_arms_train_equal_steps_from_one_m1(study):
    result = study["result"]
    assert set(result["arms"]) == {"sft", "random", "wdjt"}
    for name, arm in result["arms"].items():
        assert arm["steps"] == 3, name
        assert all(seed["steps"] == 3 for seed in arm["seeds"].values())
        assert 0.0 <= arm["mean"] <= 100.0 and arm["ci95"][0] <= arm["mean"] <= arm["ci95"][1]
    assert set(result["arms"]["sft"]["seeds"]) == {"1", "2"} and set(result["arms"]["wdjt"]["seeds"]) == {"1", "2"}
    assert set(result["paired_vs_sft"]) == {"random", "wdjt"}
    for diff in result["paired_vs_sft"].values():
        assert diff["ci95"][0] <= diff["mean_diff"] <= diff["ci95"][1]
    sel = result["selection"]
    assert 0 < sel["fraction"] <= 1 and sel["weight_cv"] >= 0 and 0 < sel["ess_fraction"] <= 1
    # Phase 1 once: M1 (its last point) and the weak snapshot evaluated, with held-out losses
    assert set(result["phase1"]["points"]) == {"6"} and set(result["models"]) == {"m1", "weak"}
    assert (study["out"] / "phase1" / "snapshots" / "step_0000002" / "model" / "hf_config.json").is_file()
    assert all("heldout_loss" in p for p in result["phase1"]["points"].values())
    out = study["out"]
    for arm in ("sft", "wdjt"):
        for seed in (1, 2):
            metrics = (out / "arms" / arm / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()
            assert len(metrics) == 3  # trained from M1 for study.stage_steps, not resumed from elsewhere


def test_random_arm_has_active_set_size_distinct_samples(study):
    out = study["out"]
    active = set((out / "select" / "seed_1" / "active_set.txt").read_text().split())
    random_ids = (out / "select" / "seed_1" / "random_set.txt").read_text().split()
    assert len(random_ids) == len(set(random_ids)) == len(active)
    assert random_ids != sorted(active) or len(active) == 24


def test_a_failed_arm_is_reported_and_the_rest_finishes(study):
    assert study["first"].returncode == 1, study["first"].stdout[-3000:] + study["first"].stderr[-3000:]
    result = study["result"]
    assert set(result["arms"]["random"]["seeds"]) == {"1"}
    assert "2" in result["failed"]["random"] and "exit code" in result["failed"]["random"]["2"]
    assert "Failed: `random` seed 2" in (study["out"] / "study.md").read_text()
    assert (study["out"] / "study.png").is_file()


def test_rerun_skips_finished_jobs(study):
    out = study["out"]
    (out / "select" / "seed_2" / "random_set.txt").unlink()  # repaired: now only that arm has work left
    done = out / "arms" / "wdjt" / "seed_1" / "DONE"
    before = done.stat().st_mtime_ns
    second = _study(study["recipe"], out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    started = [line for line in second.stdout.splitlines() if line.startswith("[study] start ")]
    assert started and all("random/seed_2" in line for line in started), started
    assert done.stat().st_mtime_ns == before
    result = json.loads((out / "study.json").read_text())
    assert set(result["arms"]["random"]["seeds"]) == {"1", "2"} and not result["failed"]


def test_accuracy_by_subset_adds_up_to_the_accuracy(study):
    """Rows with a "subset" field (4 hard, 8 easy): per-subset accuracies weighted by their sizes give the
    overall accuracy of every seed; the arm's subset means are the means over seeds; study.md shows them."""
    for arm in study["result"]["arms"].values():
        for rec in arm["seeds"].values():
            sub = rec["subsets"]
            assert set(sub) == {"easy", "hard"}
            assert (8 * sub["easy"] + 4 * sub["hard"]) / 12 == pytest.approx(rec["accuracy"], abs=1e-9)
        for name in ("easy", "hard"):
            assert arm["subsets"][name] == pytest.approx(
                sum(r["subsets"][name] for r in arm["seeds"].values()) / len(arm["seeds"]))
    assert "Accuracy by subset" in (study["out"] / "study.md").read_text()


def test_every_arm_is_diagnosed_into_study_md(study):
    found = study["result"]["diagnostics"]
    assert set(found["models"]) == {"weak", "m1", "sft", "random", "wdjt"} and 0 < found["lambda_cross"] < 1
    assert "## Logit diagnostics" in (study["out"] / "study.md").read_text()
