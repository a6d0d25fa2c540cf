"""`wmss w2s run`: weak-to-strong reasoning end to end from a recipe with a `w2s` section.

Every step is a production command in its own process (`wmss convert`, `w2s generate`, `preprocess`,
`train` (under torchrun with several ranks), `convert` + `eval`), except the filter, the pairs and the
baseline rows, which are read and written here. A step that succeeds leaves `<run_dir>/done/<step>`;
rerunning the same command skips finished steps and resumes the others (generation from its partial
sample file, training from its last checkpoint). Layout of `run_dir`:

  config.yaml          the resolved recipe (every `wmss train` reads it)
  M0/                  the strong model (model.hf_path) as a megatron checkpoint
  stage1/              weak.jsonl, icl.jsonl (sample files), sft.jsonl + sft.json (consistent questions),
                       data/sft.* (indexed), train/ (SFT of M0; export/model = M_plus), hf/ (M_plus, HF);
                       round<r>/ the same for Stage I round r > 1 (w2s.stage1_rounds; ICL data from
                       round r-1's M_plus), whose last round's M_plus Stage II starts from
  stage2/              mplus.jsonl (M_plus samples), pairs.jsonl + pairs.json, data/pairs.*,
                       train/ (DPO with reference M_plus, or ORPO; export/model = M_pro), hf/
  baseline/            sft.jsonl (every weak solution), data/sft.*, train/ (SFT of M0), hf/
  eval/<model>/        `wmss eval` of mplus (the last round), mplus_round<r> (earlier rounds), mpro, baseline
                       (when eval.enabled)
  summary.json         data counts and the evaluations
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from megatron_wmss.errors import ConfigError

_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                  "MASTER_ADDR", "MASTER_PORT")
MODELS = ("mplus", "mpro", "baseline")


def _say(message: str) -> None:
    print(f"[w2s run] {message}", flush=True)


@dataclass
class Step:
    name: str
    action: Callable[[], None]


class W2SRun:
    """The steps of one run (see the module docstring) for a resolved Config `cfg`."""

    def __init__(self, cfg, nproc: int = 1):
        self.cfg, self.w, self.nproc = cfg, cfg.w2s, nproc
        self.dir = Path(cfg.run_dir).resolve()
        self.recipe = self.dir / "config.yaml"
        self.m0 = self.dir / "M0"

    # ---- launching
    def _wmss(self, *args, ranks: int = 1) -> None:
        """A `wmss` subcommand in a fresh process (torchrun with `ranks` > 1); stops the run if it fails."""
        launcher = [sys.executable, "-m", "megatron_wmss.cli"]
        if ranks > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                        "-m", "megatron_wmss.cli"]
        self._call(launcher + [str(a) for a in args])

    def _call(self, command: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS and not k.startswith("TORCHELASTIC")}
        rc = subprocess.run(command, env=env).returncode
        if rc != 0:
            raise SystemExit(f"wmss w2s run: exit status {rc} of: {' '.join(command)}\n"
                             "(rerun the same command to resume once the cause is fixed)")

    # ---- step bodies
    def _system_args(self) -> list[str]:
        return ["--no-system-prompt"] if self.w.system_prompt is None else ["--system-prompt", self.w.system_prompt]

    def _generate(self, model, output: Path, samples: int, *extra) -> None:
        w = self.w
        sampled = samples > 1  # one sample per question: greedy
        self._wmss("w2s", "generate", "--model", model, "--questions", w.questions, "--output", output,
                   "--n", samples, "--temperature", w.temperature if sampled else 0.0,
                   "--top-p", w.top_p if sampled else 1.0, "--max-new-tokens", w.max_new_tokens, "--seed", w.seed,
                   "--chat-template", w.chat_template, *self._system_args(), "--backend", w.backend,
                   "--batch-size", w.batch_size, "--tensor-parallel-size", w.tensor_parallel_size,
                   *(["--limit", w.limit] if w.limit else []), *extra)

    def _preprocess(self, rows: Path, prefix: Path, input_format: str) -> None:
        self._wmss("preprocess", "--input", rows, "--input-format", input_format, "--tokenizer", self.cfg.model.hf_path,
                   "--chat-template", self.w.chat_template, *self._system_args(), "--output-prefix", prefix,
                   "--max-seq-length", self.cfg.data.seq_length, "--workers", 1)

    def _train(self, run_dir: Path, data: Path, objective: str, init: Path, steps: int | None,
               lr: float | None = None) -> None:
        extra = [f"training.train_iters={steps}"] if steps else []
        if lr is not None:
            extra += [f"training.lr={lr!r}", f"training.min_lr={min(lr, self.cfg.training.min_lr)!r}"]
        self._wmss("train", "--config", self.recipe, "--init-model", init, f"training.objective={objective}",
                   f"data.path={data}", "data.pack=false", f"run_dir={run_dir}", *extra, ranks=self.nproc)

    def _export_and_eval(self, checkpoint: Path, hf: Path, name: str) -> None:
        """Convert `checkpoint` to HF into `hf` and (eval.enabled) evaluate it into eval/<name>: one process."""
        command = [sys.executable, "-m", "megatron_wmss.commands.evaluate_model", "--load", str(checkpoint),
                   "--hf", str(hf)]
        if self.cfg.eval.enabled:
            from megatron_wmss.pipeline import eval_command

            manifest = self.dir / "stage1" / "data" / "sft.manifest.json"  # the prompt M_plus was trained with
            command += ["--", *eval_command(self.cfg.eval, hf, self.dir / "eval" / name, str(manifest),
                                            self.w.benchmark_file)[1:]]
        self._call(command)

    def _select(self, step: str, round_: int = 1) -> None:
        """The in-process data steps: Stage I filter (of round `round_`), Stage II pairs, the baseline's rows."""
        from megatron_wmss.w2s.consistency import all_weak_rows, filter_rows
        from megatron_wmss.w2s.contrast import pair_rows
        from megatron_wmss.w2s.samples import read_samples, write_jsonl

        weak = read_samples(self.dir / "stage1" / "weak.jsonl", "weak data")
        if step == "baseline":
            write_jsonl(self.dir / "baseline" / "sft.jsonl", all_weak_rows(weak))
            return
        if step == "filter":
            out = self.round_dir(round_)
            rows, counts = filter_rows(weak, read_samples(out / "icl.jsonl", "ICL data"), self.w.variant)
            name, what = "sft", f"Stage I round {round_} kept no question (no weak and ICL final answers agree)"
        else:
            out = self.dir / "stage2"
            rows, counts = pair_rows(read_samples(out / "mplus.jsonl", "M_plus samples"), weak, self.w.min_confidence)
            name, what = "pairs", f"Stage II built no pair (w2s.min_confidence={self.w.min_confidence})"
        summary = {"questions": dict(sorted(counts.items())), "rows": len(rows)}
        _say(f"{step}: {json.dumps(summary)}")
        if not rows:
            raise SystemExit(f"wmss w2s run: {what}: {summary['questions']}")
        (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
        write_jsonl(out / f"{name}.jsonl", rows)

    # ---- Stage I rounds
    def round_dir(self, round_: int) -> Path:
        """Stage I round 1 lives in stage1/, round r > 1 in stage1/round<r>/ (the weak data stays in stage1/)."""
        return self.dir / "stage1" / ("" if round_ == 1 else f"round{round_}")

    def mplus_eval_name(self, round_: int) -> str:
        """eval/mplus is the last round's M_plus (the one Stage II starts from); earlier rounds: mplus_round<r>."""
        return "mplus" if round_ == self.w.stage1_rounds else f"mplus_round{round_}"

    def stage1_round(self, round_: int) -> list[Step]:
        """Round 1: ICL data from the strong model. Round r > 1: ICL data from round r-1's M_plus (the same
        weak demonstrations), filtered against the same weak data; every round fine-tunes M0 afresh."""
        d, w = self.round_dir(round_), self.w
        icl_model = self.cfg.model.hf_path if round_ == 1 else self.round_dir(round_ - 1) / "hf"
        tag = "" if round_ == 1 else f"_r{round_}"
        return [
            Step(f"icl_data{tag}", lambda: self._generate(icl_model, d / "icl.jsonl", w.icl_samples, "--demonstrations",
                                                          self.dir / "stage1" / "weak.jsonl", "--shots", w.icl_shots)),
            Step(f"filter{tag}", lambda: self._select("filter", round_)),
            Step(f"preprocess_sft{tag}", lambda: self._preprocess(d / "sft.jsonl", d / "data" / "sft", "messages")),
            Step(f"train_mplus{tag}", lambda: self._train(d / "train", d / "data" / "sft", "sft", self.m0, w.stage1_steps)),
            Step(f"export_mplus{tag}", lambda: self._export_and_eval(d / "train" / "export" / "model", d / "hf",
                                                                     self.mplus_eval_name(round_))),
        ]

    # ---- the plan
    def steps(self) -> list[Step]:
        d, w, p = self.dir, self.w, self.cfg.parallel
        s1, s2, base = d / "stage1", d / "stage2", d / "baseline"
        last = self.round_dir(w.stage1_rounds)
        mplus, mpro = last / "train" / "export" / "model", s2 / "train" / "export" / "model"
        steps = [
            Step("convert_strong", lambda: self._wmss("convert", "hf-to-megatron", "--hf", self.cfg.model.hf_path,
                                                      "--out", self.m0, "--tp", p.tp, "--pp", p.pp, "--overwrite")),
            Step("weak_data", lambda: self._generate(w.weak_model, s1 / "weak.jsonl", w.weak_samples)),
        ]
        for round_ in range(1, w.stage1_rounds + 1):
            steps += self.stage1_round(round_)
        steps += [
            Step("mplus_samples", lambda: self._generate(last / "hf", s2 / "mplus.jsonl", w.mplus_samples)),
            Step("pairs", lambda: self._select("pairs")),
            Step("preprocess_pairs", lambda: self._preprocess(s2 / "pairs.jsonl", s2 / "data" / "pairs", "pairs")),
            Step("train_mpro", lambda: self._train(s2 / "train", s2 / "data" / "pairs", w.objective, mplus,
                                                   w.stage2_steps, w.stage2_lr)),
            Step("export_mpro", lambda: self._export_and_eval(mpro, s2 / "hf", "mpro")),
        ]
        if w.baseline:
            steps += [
                Step("baseline_data", lambda: self._select("baseline")),
                Step("preprocess_baseline", lambda: self._preprocess(base / "sft.jsonl", base / "data" / "sft",
                                                                     "messages")),
                Step("train_baseline", lambda: self._train(base / "train", base / "data" / "sft", "sft", self.m0,
                                                           w.baseline_steps)),
                Step("export_baseline", lambda: self._export_and_eval(base / "train" / "export" / "model", base / "hf",
                                                                      "baseline")),
            ]
        return steps

    def execute(self) -> dict:
        """Run every unfinished step in order; return the summary (also written to summary.json)."""
        done = self.dir / "done"
        done.mkdir(parents=True, exist_ok=True)
        for step in self.steps():
            if (done / step.name).is_file():
                _say(f"{step.name}: done earlier, skipped")
                continue
            _say(f"{step.name}: running")
            step.action()
            (done / step.name).write_text("")
        summary = self.summary()
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def summary(self) -> dict:
        """Data counts of the (last round's) filter and the pairs, each round's filter when there are
        several, and each evaluated model's pass@1 / pass@k."""
        rounds = range(1, self.w.stage1_rounds + 1)
        out = {"filter": _read_json(self.round_dir(rounds[-1]) / "sft.json"),
               "pairs": _read_json(self.dir / "stage2" / "pairs.json"), "models": {}}
        if len(rounds) > 1:
            out["stage1_rounds"] = [_read_json(self.round_dir(r) / "sft.json") for r in rounds]
        for name in [self.mplus_eval_name(r) for r in rounds[:-1]] + list(MODELS):
            evaluation = _read_json(self.dir / "eval" / name / "summary.json")
            if evaluation:
                out["models"][name] = {b: {"pass@1": r["pass@1"], "pass@k": r["pass@k"], "problems": r["problems"]}
                                       for b, r in evaluation["benchmarks"].items()}
        return out


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def run(cfg, nproc: int = 1) -> int:
    """`wmss w2s run`: check the recipe, record it in run_dir, execute (or resume) the steps."""
    import dataclasses

    import yaml

    if not Path(cfg.model.hf_path, "config.json").is_file():
        raise ConfigError(f"model.hf_path: {cfg.model.hf_path!r} is not a HF model directory (the strong model)")
    if nproc < 1:
        raise ConfigError("--nproc-per-node: must be >= 1")
    cfg.w2s.check_ready()
    w2s_run = W2SRun(cfg, nproc)
    w2s_run.dir.mkdir(parents=True, exist_ok=True)
    w2s_run.recipe.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    summary = w2s_run.execute()
    _say(f"done: {json.dumps(summary['models']) if summary['models'] else 'no evaluation (eval.enabled=false)'}")
    return 0
