"""The steps of `wmss quickstart` (megatron_wmss/commands/quickstart.py): each writes its outputs under
the quickstart directory, skips itself when they exist and returns its wall time (None when skipped).
The production commands (`wmss preprocess`, `wmss run`, `wmss eval`, `wmss convert`) run as processes."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO_ROOT / "examples" / "quickstart" / "recipe.yaml"
BENCH_NAME = "arith"
STATE_FILE = "quickstart.json"


# ---------------------------------------------------------------------------------------------------
# small helpers


def say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def run_wmss(argv: list[str]) -> int:
    """`wmss <argv>` as a process (its output goes to this one's); returns its exit status."""
    return subprocess.run([sys.executable, "-m", "megatron_wmss.cli", *argv]).returncode


class State:
    """`<out>/quickstart.json`: the settings that determine the outputs (checked on resume) and the wall
    time of every finished step (kept when a later run skips it)."""

    def __init__(self, out: Path, settings: dict):
        self.path = out / STATE_FILE
        settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        old = data.get("settings")
        if old is not None and old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise SystemExit(f"wmss quickstart: {out} holds a run with other settings ({', '.join(diff)}); "
                             "use another --out or delete it")
        self.settings = settings
        self.timings: dict = data.get("timings", {})
        self.runs_concurrent: bool = data.get("runs_concurrent", False)
        # wall seconds of each `wmss quickstart` call (an interrupted one up to its last finished step)
        self.invocations: list = data.get("invocations", [])
        self.started = time.monotonic()
        self.invocations.append(0.0)
        self.save()

    def save(self) -> None:
        self.invocations[-1] = round(time.monotonic() - self.started, 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "timings": self.timings,
                                   "runs_concurrent": self.runs_concurrent, "invocations": self.invocations},
                                  indent=1) + "\n")
        tmp.replace(self.path)

    def record(self, name: str, seconds: float | None) -> None:
        if seconds is not None:
            self.timings[name] = {"seconds": round(seconds, 2)}
        elif name in self.timings:
            self.timings[name]["resumed"] = True
        self.save()

    def mark_resumed(self, *names: str) -> None:
        for name in names:
            if name in self.timings:
                self.timings[name]["resumed"] = True
        self.save()


class Launched:
    """A subprocess whose full output goes to a log file and whose progress lines (the pipeline's
    `[...]` lines, `wrote ...`, warnings, errors) are echoed to the console by a reader thread."""

    SHOWN = ("[", "wrote", "WARNING", "Traceback", "error", "Error")

    def __init__(self, cmd: list[str], log_path: Path, env: dict | None = None, prefix: str = ""):
        import threading

        self.cmd, self.log_path, self.tail = cmd, log_path, []
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("a")
        self.log.write(f"$ {shlex.join(cmd)}\n")
        self.log.flush()
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     bufsize=1)
        self.thread = threading.Thread(target=self._pump, args=(prefix,), daemon=True)
        self.thread.start()

    def _pump(self, prefix: str) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            self.tail = (self.tail + [line])[-40:]
            if line.lstrip().startswith(self.SHOWN):
                print(f"    {prefix}{line.rstrip()}", flush=True)

    def poll(self):
        return self.proc.poll()

    def wait(self) -> None:
        rc = self.proc.wait()
        self.thread.join()
        self.log.close()
        if rc != 0:
            sys.stderr.write("".join(self.tail))
            raise SystemExit(f"wmss quickstart: `{shlex.join(self.cmd)}` failed with exit code {rc}; "
                             f"full log: {self.log_path}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


def _phase_times(markers: list[tuple[str, Path]], started: float) -> dict:
    """Wall time of each pipeline phase from the completion markers the pipeline writes (DONE files,
    exported configs): phase i ran from marker i-1 (or the start of this process) to marker i. A marker
    older than `started` was finished by an earlier run (None: keep the recorded time)."""
    out, prev = {}, started
    for name, marker in markers:
        t = _mtime(marker)
        if t is None:
            continue
        if t < started:
            out[name] = None
        else:
            out[name] = max(0.0, t - prev)
            prev = t
    return out


# ---------------------------------------------------------------------------------------------------
# steps


def step_task(out: Path, task_cfg, num_docs: int) -> float | None:
    from megatron_wmss.quickstart.task import write_task

    if (out / "task" / "task.json").is_file():
        return None
    t = time.monotonic()
    write_task(out / "task", task_cfg, num_docs)
    say(f"task: {task_cfg.num_train} train / {task_cfg.num_test} held-out problems -> {out / 'task'}")
    return time.monotonic() - t


def _tokenizer_corpus(out: Path) -> list[str]:
    """The text the tokenizer is trained on: rendered training conversations (system prompt, ChatML
    headers, problems, worked solutions) and the unlabelled pre-training documents."""
    from jinja2 import Template

    from megatron_wmss.prompts import CHATML_TEMPLATE
    from megatron_wmss.quickstart.task import SYSTEM_PROMPT, read_pretrain_docs

    template = Template(CHATML_TEMPLATE)
    texts = []
    for line in (out / "task" / "train.jsonl").read_text(encoding="utf-8").splitlines():
        msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        texts.append(template.render(messages=[{"role": "system", "content": SYSTEM_PROMPT}, *msgs]))
    texts += read_pretrain_docs(out / "task")
    return texts


def step_tokenizer(out: Path, vocab_size: int) -> float | None:
    from megatron_wmss.quickstart.tokenizer import train_tokenizer

    if (out / "tokenizer" / "tokenizer.json").is_file():
        return None
    t = time.monotonic()
    tok = train_tokenizer(out / "tokenizer", _tokenizer_corpus(out), vocab_size)
    say(f"tokenizer: byte-level BPE, {len(tok)} tokens -> {out / 'tokenizer'}")
    return time.monotonic() - t


def step_base_model(out: Path, model_cfg, arch: str = "qwen3") -> float | None:
    from megatron_wmss.quickstart.base_model import pretrain
    from megatron_wmss.quickstart.task import read_pretrain_docs

    if (out / "base_model" / "config.json").is_file():
        return None
    t = time.monotonic()
    docs = read_pretrain_docs(out / "task")
    pretrain(out / "base_model", out / "tokenizer", docs, model_cfg, log=say, arch=arch)
    say(f"M0 saved -> {out / 'base_model'}")
    return time.monotonic() - t


def preprocess_argv(out: Path, max_len: int) -> list[str]:
    from megatron_wmss.quickstart.task import SYSTEM_PROMPT

    return ["--input", str(out / "task" / "train.jsonl"), "--tokenizer", str(out / "base_model"),
            "--output-prefix", str(out / "data" / "train"), "--require-format", "--verify-answers",
            "--max-seq-length", str(max_len), "--system-prompt", SYSTEM_PROMPT]


def step_preprocess(out: Path, max_len: int) -> float | None:
    if (out / "data" / "train.manifest.json").is_file():
        return None
    t = time.monotonic()
    say("wmss preprocess " + shlex.join(preprocess_argv(out, max_len)))
    if run_wmss(["preprocess", *preprocess_argv(out, max_len)]) != 0:
        raise SystemExit("wmss quickstart: wmss preprocess failed (see above)")
    counts = json.loads((out / "data" / "train.manifest.json").read_text())["counts"]
    if counts["dropped"]:
        for suffix in (".bin", ".idx", "_mask.bin", "_mask.idx", ".ids.jsonl", ".manifest.json"):
            (out / "data" / f"train{suffix}").unlink(missing_ok=True)
        raise SystemExit(f"wmss quickstart: wmss preprocess dropped {counts['dropped']} of {counts['rows_read']} "
                         f"generated rows ({', '.join(counts['dropped_by_reason'])}); with too_long, raise "
                         "data.seq_length (--set data.seq_length=N) or --vocab-size")
    return time.monotonic() - t


def run_command(args, out: Path, baseline: bool) -> list[str]:
    """The `wmss run` command line (torchrun with --tp > 1)."""
    launcher = [sys.executable, "-m", "megatron_wmss.cli"]
    if args.tp > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.tp}",
                    "-m", "megatron_wmss.cli"]
    # Step-matched budgets: Phase 1 = 1 epoch of D, WD-JT as many steps again, baseline = their sum.
    phase_steps = math.ceil(args.num_train / recipe_value(args, "training", "global_batch_size"))
    overrides = [f"model.hf_path={out / 'base_model'}", f"data.path={out / 'data' / 'train'}",
                 f"wmss.sft_steps={phase_steps}", f"wmss.wdjt_steps={phase_steps}", "wmss.step_matched=true",
                 f"run_dir={out / 'run'}", f"parallel.tp={args.tp}", f"training.seed={args.seed}",
                 f"data.seed={args.seed}", *args.set]
    return launcher + ["run", "--config", str(args.recipe), *overrides] + (["--baseline", "sft"] if baseline else [])


WMSS_PHASES = ("M0 conversion (+ startup)", "Phase 1 SFT", "WD-DS", "WD-JT", "WMSS export to HF")
BASELINE_PHASES = ("baseline SFT (+ startup)", "baseline export to HF")


def display_run_command(args, out: Path, baseline: bool) -> str:
    """`run_command` as a user would type it."""
    cmd = run_command(args, out, baseline)
    rest = cmd[cmd.index("run"):]
    if args.tp > 1:
        return shlex.join(["torchrun", "--standalone", f"--nproc_per_node={args.tp}", "-m", "megatron_wmss.cli", *rest])
    return shlex.join(["wmss", *rest])


def step_runs(args, out: Path, state: State) -> None:
    """`wmss run` (WMSS) and `wmss run --baseline sft` into the same run directory (they share M0).

    With --tp 1 the two run side by side, one thread each (the baseline starts once the WMSS run has
    converted M0): on 2 cores that is faster than one after the other with two threads each. With
    --tp > 1 (torchrun, one process per rank) they run one after the other."""
    run = out / "run"
    todo = {"wmss": not (run / "wmss_hf" / "config.json").is_file(),
            "baseline": not (run / "baseline_sft_hf" / "config.json").is_file()}
    if not todo["wmss"]:
        state.mark_resumed(*WMSS_PHASES)
    if not todo["baseline"]:
        state.mark_resumed(*BASELINE_PHASES)
    concurrent = args.tp == 1
    env = dict(os.environ, OMP_NUM_THREADS="1")  # torchrun does the same per rank; same numerics on resume
    launched: dict[str, Launched] = {}
    try:
        for name in ("wmss", "baseline"):
            if not todo[name]:
                continue
            cmd = run_command(args, out, baseline=name == "baseline")
            if name == "baseline" and "wmss" in launched:
                if concurrent:  # M0 is converted by the first run; the second must not convert it again
                    while not (run / "M0" / "hf_config.json").is_file() and launched["wmss"].poll() is None:
                        time.sleep(0.5)
                    if launched["wmss"].poll() not in (None, 0):
                        launched["wmss"].wait()  # raises with the log
                else:
                    launched["wmss"].wait()
            say(("SFT baseline: " if name == "baseline" else "WMSS: ") + shlex.join(cmd))
            launched[name] = Launched(cmd, out / "logs" / f"{name}_run.log", env=env,
                                      prefix="(baseline) " if concurrent and name == "baseline" else "")
        for proc in launched.values():
            proc.wait()
    except BaseException:
        for proc in launched.values():
            proc.kill()
        raise
    if "wmss" in launched:
        times = _phase_times([(WMSS_PHASES[0], run / "M0" / "hf_config.json"),
                              (WMSS_PHASES[1], run / "phase1_sft" / "DONE"),
                              (WMSS_PHASES[2], run / "iter_1" / "select" / "DONE"),
                              (WMSS_PHASES[3], run / "iter_1" / "wdjt" / "DONE"),
                              (WMSS_PHASES[4], run / "wmss_hf" / "config.json")], launched["wmss"].started)
        for name, seconds in times.items():
            state.record(name, seconds)
    if "baseline" in launched:
        times = _phase_times([(BASELINE_PHASES[0], run / "baseline_sft" / "DONE"),
                              (BASELINE_PHASES[1], run / "baseline_sft_hf" / "config.json")],
                             launched["baseline"].started)
        for name, seconds in times.items():
            state.record(name, seconds)
    if len(launched) == 2:
        state.runs_concurrent = concurrent
    state.save()


# evaluated models: name -> (HF directory relative to --out, label)
EVALUATED = {"wmss": ("run/wmss_hf", "WMSS"), "baseline_sft": ("run/baseline_sft_hf", "SFT baseline"),
             "phase1_sft": ("run/phase1_sft_hf", "M1"), "m0": ("base_model", "M0")}


def eval_argv(args, out: Path, name: str) -> list[str]:
    return ["--model", str(out / EVALUATED[name][0]),
            "--benchmark-file", f"{BENCH_NAME}={out / 'task' / 'test_benchmark.jsonl'}",
            "--manifest", str(out / "data" / "train.manifest.json"), "--max-new-tokens", str(args.max_new_tokens),
            "--batch-size", str(args.eval_batch_size), "--grade-workers", "1", "--no-progress",
            "--output-dir", str(out / "run" / "eval" / name)]


def m1_export_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "megatron_wmss.cli", "convert", "megatron-to-hf",
            "--load", str(out / "run" / "phase1_sft" / "export" / "model"), "--out", str(out / "run" / "phase1_sft_hf"),
            "--overwrite"]


def step_export_m1(out: Path) -> float | None:
    """M1 (the Phase-1 SFT model, WD-JT's starting strong branch) to HF, to show what WD-JT changed."""
    if (out / "run" / "phase1_sft_hf" / "config.json").is_file():
        return None
    t = time.monotonic()
    say("M1 to HF: wmss " + shlex.join(m1_export_command(out)[3:]))
    Launched(m1_export_command(out), out / "logs" / "m1_export.log", env=dict(os.environ, OMP_NUM_THREADS="1")).wait()
    return time.monotonic() - t


def step_eval(args, out: Path, name: str) -> float | None:
    summary = out / "run" / "eval" / name / "summary.json"
    if summary.is_file() and BENCH_NAME in json.loads(summary.read_text()).get("benchmarks", {}):
        return None
    t = time.monotonic()
    say("wmss eval " + shlex.join(eval_argv(args, out, name)))
    if run_wmss(["eval", *eval_argv(args, out, name)]) != 0:
        raise SystemExit(f"wmss quickstart: wmss eval of {name} failed (see above)")
    return time.monotonic() - t


def recipe_value(args, section: str, option: str):
    from megatron_wmss.config import load_config

    cfg = load_config(args.recipe, [s for s in args.set])
    return getattr(getattr(cfg, section), option)


def step_report(args, out: Path, state: State, settings: dict, argv: list[str]) -> dict:
    from megatron_wmss.quickstart import report
    from megatron_wmss.selection.scoring import read_scores

    run = out / "run"
    pre = json.loads((out / "base_model" / "pretrain_summary.json").read_text())
    manifest = json.loads((out / "data" / "train.manifest.json").read_text())
    meta = {
        "command": ["wmss", "quickstart", *argv], "seed": args.seed, "tp": args.tp, "out": str(out),
        "num_train": manifest["counts"]["kept"], "num_test": args.num_test,
        "vocab_size": manifest["tokenizer"]["vocab_size"],
        "m0": {"parameters": pre["parameters"], "steps": pre["config"]["steps"]},
        "steps": json.loads((run / "steps.json").read_text()),
        "settings": settings,
        "commands": [
            "wmss preprocess " + shlex.join(preprocess_argv(out, settings["max_seq_length"])),
            display_run_command(args, out, baseline=False),
            display_run_command(args, out, baseline=True),
            "wmss " + shlex.join(m1_export_command(out)[3:]),
            *("wmss eval " + shlex.join(eval_argv(args, out, n)) for n in EVALUATED)],
    }
    meta["wall"] = {"invocations": state.invocations, "runs_concurrent": state.runs_concurrent}
    res = report.collect(out, run, BENCH_NAME, state.timings, meta)
    scores = read_scores(run / "iter_1" / "select") if (run / "iter_1" / "select" / "scores").is_dir() else {}
    res["scores"] = {"h_strong": [s["h_strong"] for s in scores.values()],
                     "h_weak": [s["h_weak"] for s in scores.values()]} if scores else None
    table = report.results_table(res)
    report.plot(res, out / "report.png")
    (out / "report.md").write_text(report.markdown_report(res, table, "report.png"))
    (out / "results.json").write_text(json.dumps({k: v for k, v in res.items() if k not in ("curves", "scores")},
                                                 indent=1) + "\n")
    return {"table": table, "results": res}
