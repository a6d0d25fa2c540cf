"""Weak-to-strong reasoning on CPU, on the bundled arithmetic task: the three arms (full weak FT, Stage I
= M_plus, Stage II = M_pro) over several seeds, with 95% CIs (the measured result is in docs/w2s.md).

  python examples/w2s/cpu_demo.py --out runs/w2s_demo            # seeds 1 2 3; resumable
  python examples/w2s/cpu_demo.py --out runs/w2s_demo --seeds 1  # one seed (minutes)

The models, made here with no download:
- task and tokenizer: those of the bundled `wmss study` (study/bundled.py DEFAULT: 1,000 training and
  1,000 held-out problems of the "plateau" arithmetic family).
- the STRONG model: the study's M0 architecture (a 0.94M-parameter Qwen3) pre-trained ten times longer
  (STRONG_PRETRAIN_STEPS) on the same plain task text; never shown the chat format or a gold solution
  in it. (With the study's own 150-step M0 as the strong model nothing learns: docs/w2s.md.)
- the WEAK model: a smaller Qwen3 (WEAK_BASE below) pre-trained on the same text, then fine-tuned with
  `wmss train` on the gold solutions of the first GOLD training problems (the paper's "small set with
  gold solutions").
The remaining training problems are the w2s questions (their answers are never read); evaluation is
greedy accuracy on the held-out problems. One `wmss w2s run` per seed (examples/w2s/cpu_demo.yaml);
a seed changes the ICL demonstrations, M_plus's samples and the training data order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from megatron_wmss.quickstart.base_model import BaseModelConfig  # noqa: E402
from megatron_wmss.study import bundled  # noqa: E402

GOLD = 300  # training problems with gold solutions for the weak model
WEAK_BASE = BaseModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                            intermediate_size=192, steps=150, seed=bundled.TASK_SEED)
WEAK_SFT_STEPS = 600  # 16 epochs of the gold set at global batch 8
STRONG_PRETRAIN_STEPS = 1500
RECIPE = REPO / "examples" / "w2s" / "cpu_demo.yaml"
ARMS = {"baseline": "full weak FT", "mplus": "Stage I (M_plus)", "mpro": "Stage II (M_pro)"}


def wmss(*args) -> None:
    command = [sys.executable, "-m", "megatron_wmss.cli", *map(str, args)]
    print("$ wmss " + " ".join(map(str, args)), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}")


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def prepare(out: Path) -> None:
    """Task, tokenizer, strong base model; the gold and question files."""
    bundled.prepare(out, bundled.DEFAULT)
    train = [json.loads(line) for line in (out / "task" / "train.jsonl").read_text().splitlines()]
    if not (out / "w2s" / "questions.jsonl").is_file():
        (out / "w2s").mkdir(exist_ok=True)
        write_rows(out / "w2s" / "gold.jsonl", train[:GOLD])
        questions = [{"id": r["id"], "problem": r["messages"][0]["content"]} for r in train[GOLD:]]
        write_rows(out / "w2s" / "questions.jsonl", questions)


def strong_model(out: Path) -> Path:
    """The strong model: the study M0's shape and seed, pre-trained STRONG_PRETRAIN_STEPS steps."""
    from megatron_wmss.quickstart import steps
    from megatron_wmss.quickstart.base_model import pretrain
    from megatron_wmss.quickstart.task import read_pretrain_docs

    hf = out / "w2s" / "strong"
    if not (hf / "config.json").is_file():
        setup = bundled.DEFAULT
        config = BaseModelConfig(hidden_size=setup.hidden_size, num_layers=setup.layers,
                                 intermediate_size=setup.ffn_size, steps=STRONG_PRETRAIN_STEPS, seed=bundled.TASK_SEED)
        pretrain(hf, out / "tokenizer", read_pretrain_docs(out / "task"), config, log=steps.say)
    return hf


def weak_model(out: Path) -> Path:
    """The weak model: WEAK_BASE pre-trained, then SFT on the gold set; returns its HF directory."""
    from megatron_wmss.quickstart import steps
    from megatron_wmss.quickstart.base_model import pretrain
    from megatron_wmss.quickstart.task import SYSTEM_PROMPT, read_pretrain_docs

    d = out / "w2s" / "weak"
    hf = d / "hf"
    if (hf / "config.json").is_file():
        return hf
    if not (d / "base" / "config.json").is_file():
        pretrain(d / "base", out / "tokenizer", read_pretrain_docs(out / "task"), WEAK_BASE, log=steps.say)
    if not (d / "gold.manifest.json").is_file():
        wmss("preprocess", "--input", out / "w2s" / "gold.jsonl", "--tokenizer", d / "base",
             "--output-prefix", d / "gold", "--system-prompt", SYSTEM_PROMPT, "--max-seq-length", 208)
    wmss("convert", "hf-to-megatron", "--hf", d / "base", "--out", d / "M0", "--overwrite")
    wmss("train", "--config", RECIPE, "--init-model", d / "M0", f"model.hf_path={d / 'base'}",
         f"data.path={d / 'gold'}", f"training.train_iters={WEAK_SFT_STEPS}", f"run_dir={d / 'train'}")
    subprocess.run([sys.executable, "-m", "megatron_wmss.commands.evaluate_model", "--load",
                    str(d / "train" / "export" / "model"), "--hf", str(hf)], check=True)
    return hf


def evaluate(out: Path, hf: Path, name: str) -> float:
    """Greedy held-out accuracy of a model outside the w2s runs (the strong base, the weak model), with
    the task's prompt (the manifest of its preprocessed training data)."""
    out_dir = out / "w2s" / "eval" / name
    if not (out_dir / "summary.json").is_file():
        wmss("eval", "--model", hf, "--output-dir", out_dir, "--manifest", out / "data" / "train.manifest.json",
             "--benchmark-file", benchmark_file(out), "--backend", "transformers", "--batch-size", 100,
             "--max-new-tokens", 160, "--grade-workers", 1, "--no-progress")
    return json.loads((out_dir / "summary.json").read_text())["benchmarks"][bundled.BENCH_NAME]["pass@1"]


def benchmark_file(out: Path) -> str:
    return f"{bundled.BENCH_NAME}={out / 'task' / 'test_benchmark.jsonl'}"


def run_seed(out: Path, strong: Path, weak: Path, seed: int) -> dict:
    from megatron_wmss.quickstart.task import SYSTEM_PROMPT

    run_dir = out / "w2s" / f"seed_{seed}"
    if not (run_dir / "summary.json").is_file() or not (run_dir / "done" / "export_baseline").is_file():
        wmss("w2s", "run", "--config", RECIPE, f"run_dir={run_dir}", f"model.hf_path={strong}",
             f"w2s.weak_model={weak}", f"w2s.questions={out / 'w2s' / 'questions.jsonl'}",
             f"w2s.benchmark_file={benchmark_file(out)}", f"w2s.system_prompt={SYSTEM_PROMPT}", f"w2s.seed={seed}", f"training.seed={seed}",
             f"data.seed={seed}")
    return json.loads((run_dir / "summary.json").read_text())


def report(out: Path, seeds: list[int], summaries: dict, reference: dict) -> str:
    """Markdown: per-arm accuracy (%, `wmss eval`'s pass@1) per seed, the mean with its 95% Student-t CI over seeds, and the data
    counts of each seed's filter and pairs."""
    from megatron_wmss.study.stats import seed_mean_ci

    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean [95% CI] |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name, accuracy in reference.items():  # one model, no seed
        lines.append(f"| {name} | " + " | ".join("" for _ in seeds) + f" | {accuracy:.1f} |")
    for arm, label in ARMS.items():
        per_seed = {s: summaries[s]["models"][arm][bundled.BENCH_NAME]["pass@1"] for s in seeds}
        mean, ci = seed_mean_ci(per_seed) if len(seeds) > 1 else (per_seed[seeds[0]], [float("nan")] * 2)
        lines.append(f"| {label} | " + " | ".join(f"{per_seed[s]:.1f}" for s in seeds)
                     + f" | {mean:.1f} [{ci[0]:.1f}, {ci[1]:.1f}] |")
    lines += ["", "| seed | Stage I questions | Stage I rows | Stage II questions | pairs |", "|---|---|---|---|---|"]
    for s in seeds:
        f, p = summaries[s]["filter"], summaries[s]["pairs"]
        lines.append(f"| {s} | {json.dumps(f['questions'])} | {f['rows']} | {json.dumps(p['questions'])} | {p['rows']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "w2s_demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    out = args.out.resolve()
    prepare(out)
    strong, weak = strong_model(out), weak_model(out)
    reference = {"strong base model": evaluate(out, strong, "strong"),
                 "weak model (gold SFT)": evaluate(out, weak, "weak")}
    summaries = {seed: run_seed(out, strong, weak, seed) for seed in args.seeds}
    text = report(out, args.seeds, summaries, reference)
    (out / "w2s" / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
