"""`wmss study`: is WMSS better than plain SFT, at equal optimizer steps, over several seeds?

From one Phase-1 model M1 (trained here once from M0, or given with --m1) every arm trains the same number
of steps with the same learning-rate schedule and is evaluated on the held-out problems:
`sft` (continue on D), `sft_active` (SFT on D_active), `random` (SFT on a random subset of |D_active|),
`wdjt` (WD-JT), `wdjt_frozen` (frozen weak branch), the paper's baselines `neftune` and `undial`, and
`--lam` adds WD-JT arms for a lambda sweep. Every arm's model is also diagnosed (`wmss diagnose`: logit
statistics against the weak model and M1, and the predicted lambda_cross, marked on the sweep's plot).
Writes study.json, study.md and study.png into --out; rerunning the same command resumes arm by arm
(finished jobs are skipped); a failed arm is reported in all three and makes the exit status 1.

Without --config the study runs on the bundled plateau task (generated here with its tokenizer and
M0, like `wmss quickstart`); --quick is the same study reduced to minutes. Every step is a production
command (`wmss convert`, `train`, `select`, `eval`), launched with torchrun when --nproc-per-node > 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmss study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe with a `study:` section (default: the bundled plateau task)")
    p.add_argument("overrides", nargs="*", help="section.option=value recipe overrides")
    p.add_argument("--out", default=None, help="study directory [default: runs/study, runs/study_quick with --quick]")
    p.add_argument("--arms", help="comma-separated arms (study.arms): sft,sft_active,random,wdjt,wdjt_frozen,"
                                  "neftune,undial")
    p.add_argument("--seeds", help="comma-separated seeds (study.seeds), e.g. 1,2,3")
    p.add_argument("--lam", help="lambda sweep: comma-separated values, one extra WD-JT arm each (study.lams)")
    p.add_argument("--quick", action="store_true", help="the bundled study reduced to <= 5 minutes on 2 cores")
    p.add_argument("--m1", help="a given Phase-1 model (megatron model checkpoint): Phase 1 is not trained")
    p.add_argument("--weak-model", help="a given weak model checkpoint (default: wmss.weak)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="ranks of each training/selection command (torchrun)")
    p.add_argument("--jobs", type=int, default=None,
                   help="commands run at once [default: 2 on a CPU-only machine with --nproc-per-node 1, else 1]")
    return p


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _cli_overrides(args) -> list[str]:
    out = []
    if args.arms:
        out.append(f"study.arms=[{args.arms}]")
    if args.seeds:
        out.append(f"study.seeds=[{args.seeds}]")
    if args.lam:
        out.append(f"study.lams=[{args.lam}]")
    return out


def _resolve(args, out: Path):
    """(config, title) from the bundled setup or --config, with the command line's overrides."""
    from megatron_wmss.config import load_config
    from megatron_wmss.study import bundled

    if args.config:
        return load_config(args.config, [*args.overrides, *_cli_overrides(args)]), f"recipe {args.config}"
    setup = bundled.QUICK if args.quick else bundled.DEFAULT
    pointers = bundled.prepare(out, setup, say=_say)
    cfg = load_config(bundled.recipe_path(setup), [*pointers, *args.overrides, *_cli_overrides(args)])
    title = "bundled plateau task" + (" (--quick: a smoke-test size, too small to conclude anything)"
                                      if args.quick else "")
    return cfg, title


def _write_recipe(cfg, path: Path) -> None:
    import yaml

    from megatron_wmss.config import to_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def _merge_timings(out: Path, seconds: dict) -> dict:
    """Wall seconds of every job, kept across invocations (a resumed study keeps the earlier figures)."""
    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings.update({k: round(v, 1) for k, v in seconds.items()})
    path.write_text(json.dumps(timings, indent=1) + "\n")
    return timings


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("wmss study: start it as one process; it launches each training and selection command "
                         "with torchrun itself (--nproc-per-node N)")
    if args.quick and args.config:
        raise SystemExit("wmss study: --quick reduces the bundled study; with --config, size the recipe instead")
    if args.nproc_per_node < 1 or (args.jobs is not None and args.jobs < 1):
        raise SystemExit("wmss study: --nproc-per-node and --jobs must be >= 1")
    from megatron_wmss.study import report, results
    from megatron_wmss.study.arms import build_arms
    from megatron_wmss.study.plan import StudyPlan
    from megatron_wmss.study.runner import JobRunner

    started = time.monotonic()
    out = Path(args.out or ("runs/study_quick" if args.quick else "runs/study")).resolve()
    cfg, title = _resolve(args, out)  # a ConfigError reaches `wmss` (exit status 2, one line)
    if not args.m1 and not cfg.model.hf_path:
        raise SystemExit("wmss study: model.hf_path (M0) is required unless --m1 and --weak-model are given")
    cfg.run_dir = str(out)
    plan = StudyPlan(cfg, out, build_arms(cfg.study.arms, cfg.study.lams, cfg.wmss.lam), nproc=args.nproc_per_node,
                     m1=Path(args.m1).resolve() if args.m1 else None,
                     weak_model=Path(args.weak_model).resolve() if args.weak_model else None)
    _write_recipe(cfg, plan.recipe)
    import torch

    jobs = args.jobs or (2 if not torch.cuda.is_available() and args.nproc_per_node == 1 else 1)
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // jobs)))
    _say(f"{out}: arms {', '.join(a.name for a in plan.arms)}; seeds {plan.seeds}; {jobs} job(s) at once")
    outcome = JobRunner(out / "logs", max_parallel=jobs, env=env, say=_say).run(plan.jobs())
    timings = _merge_timings(out, outcome.seconds)
    result = results.collect(plan, outcome)
    meta = {"title": title, "command": shlex.join(["wmss", "study", *argv]), "seeds": plan.seeds,
            "stage_steps": plan.stage_steps() if (plan.select_dir(plan.seeds[0]) / "active_set.txt").is_file()
            else cfg.study.stage_steps,
            "benchmarks": cfg.study.benchmark_file or ", ".join(cfg.eval.benchmarks), "weak": cfg.wmss.weak,
            "lam": cfg.wmss.lam,
            "wall": f"{time.monotonic() - started:.0f} s"}
    result.update(meta=meta, timings=timings, recipe=str(plan.recipe))
    (out / "study.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "study.md").write_text(report.markdown(result, meta))
    if result["arms"]:
        report.plot(result, out / "study.png")
    print()
    print((out / "study.md").read_text().split("\n## ")[0])
    _say(f"wrote {out / 'study.json'}, {out / 'study.md'}, {out / 'study.png'} in {meta['wall']}")
    failed = sorted(name for name, status in outcome.status.items() if status != "done")
    if failed:
        _say(f"{len(failed)} job(s) did not finish: {', '.join(failed[:8])}{' ...' if len(failed) > 8 else ''}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
