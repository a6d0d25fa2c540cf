"""`wmss quickstart` end to end on CPU in a reduced configuration (tiny model, few problems), then a
second run into the same directory that must skip everything; plus determinism of the generated task."""

import json
import math
import time

import pytest

from megatron_wmss.commands.quickstart import main
from megatron_wmss.quickstart.task import SYSTEM_PROMPT, TaskConfig, generate_splits, pretrain_corpus, write_task

REDUCED = ["--seed", "7", "--num-train", "48", "--num-test", "12", "--pretrain-docs", "400",
           "--pretrain-steps", "6", "--hidden-size", "32", "--layers", "2", "--ffn-size", "64",
           "--max-new-tokens", "48", "--eval-batch-size", "12",
           "--set", "training.global_batch_size=16", "--set", "training.micro_batch_size=8",
           "--set", "training.log_interval=100"]


def test_task_generation_is_deterministic_and_split_is_disjoint(tmp_path):
    cfg = TaskConfig(num_train=300, num_test=50, seed=3)
    train, test = generate_splits(cfg)
    assert (train, test) == generate_splits(cfg)
    assert generate_splits(TaskConfig(num_train=300, num_test=50, seed=4)) != (train, test)
    assert not {p["problem"] for p in train} & {p["problem"] for p in test}
    assert generate_splits(TaskConfig(num_train=10, num_test=50, seed=3))[1] == test  # test split independent of |D|
    for p in train + test:
        assert 0 <= p["answer"] <= cfg.max_value and p["think"].endswith(f" = {p['answer']}.")
        assert cfg.min_steps <= p["think"].count(" = ") <= cfg.max_steps
    corpus = pretrain_corpus(cfg, 400, exclude={p["problem"] for p in test})
    assert corpus == pretrain_corpus(cfg, 400, exclude={p["problem"] for p in test})
    assert not any("<|im_start|>" in d or SYSTEM_PROMPT in d for d in corpus)  # never the chat format
    assert not any(d.startswith(p["problem"]) for d in corpus for p in test)  # never a held-out problem
    write_task(tmp_path / "a", cfg, 40)
    write_task(tmp_path / "b", cfg, 40)
    for name in ("train.jsonl", "test.jsonl", "test_benchmark.jsonl", "pretrain.jsonl", "task.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    row = json.loads((tmp_path / "a" / "train.jsonl").read_text().splitlines()[0])
    user, assistant = row["messages"]
    assert user["info"]["reference_answer"] == str(train[0]["answer"])
    think, answer = train[0]["think"], train[0]["answer"]
    assert assistant["content"] == f"<think>{think}</think>\n<answer>\\boxed{{{answer}}}</answer>"


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    started = time.monotonic()
    assert main(["--out", str(out), *REDUCED]) == 0
    return out, time.monotonic() - started


def test_quickstart_end_to_end(quickstart_run):
    out, _ = quickstart_run
    for rel in ("task/train.jsonl", "task/test_benchmark.jsonl", "tokenizer/tokenizer.json",
                "base_model/model.safetensors", "base_model/config.json", "data/train.manifest.json",
                "run/M0/hf_config.json", "run/wmss_hf/model.safetensors", "run/baseline_sft_hf/model.safetensors",
                "run/iter_1/select/summary.json", "run/iter_1/select/active_set.txt",
                "report.md", "report.png", "results.json", "quickstart.json"):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "base_model" / "config.json").read_text())["model_type"] == "qwen3"
    res = json.loads((out / "results.json").read_text())
    for name in ("sft", "wmss", "m0", "m1"):  # every held-out problem graded once; accuracy = correct / problems
        acc = res["accuracy"][name]
        assert acc["problems"] == 12 and sum(acc["reasons"].values()) == 12, acc
        assert acc["accuracy"] == acc["reasons"].get("correct", 0) / 12, acc
    sel = res["selection"]
    assert 0.0 < sel["selected_fraction"] <= 1.0 and sel["num_samples"] == res["num_train"]

    def steps(rel):
        return [json.loads(line) for line in (out / "run" / rel / "metrics.jsonl").read_text().splitlines()]

    phase1, wdjt, base = steps("phase1_sft"), steps("iter_1/wdjt"), steps("baseline_sft")
    n, gbs = res["num_train"], 16
    # step-matched: Phase 1 = 1 epoch of D, WD-JT as many steps, the baseline their sum
    assert len(phase1) == len(wdjt) == -(-n // gbs) and len(base) == len(phase1) + len(wdjt)
    assert all("strong_ce" in r and "weak_ce" in r for r in wdjt)
    assert res["steps"] == {"phase1_sft": len(phase1), "wdjt": [len(wdjt)], "baseline_sft": len(base)}
    assert all(math.isfinite(r["loss"]) for r in phase1 + wdjt + base)
    assert base[-1]["loss"] < base[0]["loss"]  # it trained
    timings = json.loads((out / "quickstart.json").read_text())["timings"]
    for name in ("M0 pre-training (plain task text)", "Phase 1 SFT", "WD-DS", "WD-JT", "baseline SFT (+ startup)", "eval WMSS", "eval SFT baseline", "eval M0", "eval M1",
                 "M1 export to HF"):
        assert 0 < timings[name]["seconds"] < quickstart_run[1], name  # ran in this invocation, inside its time
    report = (out / "report.md").read_text()
    assert "SFT baseline" in report and "WMSS (K=1)" in report and "M1 (WMSS Phase 1)" in report and "Seed: 7" in report


def test_second_run_resumes_without_redoing_work(quickstart_run, capsys):
    out, first_seconds = quickstart_run
    markers = [out / "run" / rel for rel in ("phase1_sft/DONE", "iter_1/select/DONE", "iter_1/wdjt/DONE",
                                            "baseline_sft/DONE", "wmss_hf/config.json", "eval/wmss/summary.json")]
    before = [m.stat().st_mtime_ns for m in markers]
    logs = {p: p.stat().st_size for p in (out / "logs").iterdir()}
    started = time.monotonic()
    assert main(["--out", str(out), *REDUCED]) == 0
    assert time.monotonic() - started < first_seconds / 2
    assert [m.stat().st_mtime_ns for m in markers] == before
    assert {p: p.stat().st_size for p in (out / "logs").iterdir()} == logs  # no `wmss run` launched
    timings = json.loads((out / "quickstart.json").read_text())["timings"]
    assert timings["Phase 1 SFT"].get("resumed") and timings["task"].get("resumed")
    assert "WMSS (K=1)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="other settings"):
        main(["--out", str(out), *REDUCED[:1], "8", *REDUCED[2:]])
