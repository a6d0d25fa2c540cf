"""Collect a study's outputs into `study.json`: accuracy per arm and seed with steps actually trained,
means and 95% CIs, paired differences to `sft`, the selection's spread, the Phase-1 curve and failures.

Schema (the keys other tools read; more keys are allowed):
  {"arms": {NAME: {"steps": int, "seeds": {"<seed>": {"accuracy": %, "steps": int}}, "mean": %, "ci95": [lo, hi]}},
   "paired_vs_sft": {NAME: {"mean_diff": points, "ci95": [lo, hi]}},
   "selection": {"fraction": float, "weight_cv": float, "ess_fraction": float}}
When the benchmark file's rows carry a "subset" field (the bundled task: "easy" / "hard"), every seed, arm
and evaluated model also gets "subsets": {SUBSET: accuracy %}. "phase1" holds the evaluated Phase-1
snapshots and, when one lies an epoch before the end, "plateau" (plateau.py: is Phase 1 flat?).
"diagnostics": the logit statistics of study/diagnostics.py ({} when no arm was diagnosed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megatron_wmss import budget
from megatron_wmss.study import diagnostics, stats
from megatron_wmss.study.plateau import plateau_check
from megatron_wmss.study.plan import StudyPlan
from megatron_wmss.study.runner import DONE, Outcome


def _scores_by_id(eval_dir: Path) -> dict[str, dict[str, float]]:
    """{benchmark: {problem id: share of correct samples}} from `wmss eval`'s samples."""
    scores = {}
    for path in sorted((eval_dir / "samples").glob("*.jsonl")):
        by_id: dict[str, list[float]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                by_id.setdefault(str(rec["id"]), []).append(1.0 if rec["correct"] else 0.0)
        scores[path.stem] = {k: float(np.mean(v)) for k, v in by_id.items()}
    if not scores:
        raise FileNotFoundError(f"no evaluation samples in {eval_dir}")
    return scores


def read_scores(eval_dir: Path, by_id: dict | None = None) -> stats.Scores:
    """Per-problem scores (share of correct samples) per benchmark, problems sorted by id (`by_id`: the
    samples already read by `_scores_by_id`)."""
    by_id = _scores_by_id(eval_dir) if by_id is None else by_id
    return {bench: np.array([scores[k] for k in sorted(scores)]) for bench, scores in by_id.items()}


def read_subsets(benchmark_file: str | None) -> dict[str, str]:
    """{problem id: subset} from the optional "subset" field of a `NAME=PATH` benchmark file's rows."""
    if not benchmark_file:
        return {}
    path = Path(benchmark_file.split("=", 1)[-1])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(r["id"]): r["subset"] for r in rows if "subset" in r and "id" in r}


def subset_accuracy(by_id: dict[str, dict[str, float]], subsets: dict[str, str]) -> dict[str, float]:
    """Accuracy in percent on each subset of the evaluated problems (all benchmarks together); `by_id`
    from `_scores_by_id`."""
    groups: dict[str, list[float]] = {}
    for scores in by_id.values():
        for problem, score in scores.items():
            if problem in subsets:
                groups.setdefault(subsets[problem], []).append(score)
    return {name: 100.0 * float(np.mean(v)) for name, v in sorted(groups.items())}


def trained_steps(run_dir: Path) -> int:
    """Optimizer steps of a finished `wmss train` run, from its latest checkpoint."""
    ckpt = run_dir / "checkpoints"
    latest = ckpt / (ckpt / "latest").read_text().strip()
    return int(json.loads((latest / "trainer_state.json").read_text())["step"])


def _training_curve(run_dir: Path) -> list:
    """[(step, the strong model's training CE)]: `strong_ce` for WD-JT, `loss` for SFT."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r.get("strong_ce", r["loss"])) for r in rows]


def _model_result(directory: Path, subsets: dict[str, str]) -> dict | None:
    ev = directory / "eval"
    if not (ev / "samples").is_dir():
        return None
    by_id = _scores_by_id(ev)
    result = {"accuracy": stats.accuracy(read_scores(ev, by_id)),
              "num_problems": sum(len(problems) for problems in by_id.values())}
    if subsets:
        result["subsets"] = subset_accuracy(by_id, subsets)
    if (ev / "heldout_loss.json").is_file():
        result["heldout_loss"] = json.loads((ev / "heldout_loss.json").read_text())["loss"]
    return result


def collect(plan: StudyPlan, outcome: Outcome) -> dict:
    arms, scores, failed, curves = {}, {}, {}, {}
    subsets = read_subsets(plan.cfg.study.benchmark_file)
    for arm in plan.arms:
        per_seed, arm_scores = {}, {}
        for seed in plan.seeds:
            name = f"{arm.name}/seed_{seed}"
            jobs = [f"train/{name}", f"eval/{name}"]
            broken = [j for j in jobs if outcome.status.get(j) not in (DONE, None)]
            if broken:
                failed.setdefault(arm.name, {})[str(seed)] = outcome.errors.get(broken[0], outcome.status[broken[0]])
                continue
            run_dir = plan.arm_dir(arm.name, seed)
            by_id = _scores_by_id(run_dir / "eval")
            arm_scores[str(seed)] = read_scores(run_dir / "eval", by_id)
            per_seed[str(seed)] = {"accuracy": stats.accuracy(arm_scores[str(seed)]), "steps": trained_steps(run_dir)}
            if subsets:
                per_seed[str(seed)]["subsets"] = subset_accuracy(by_id, subsets)
            heldout = run_dir / "eval" / "heldout_loss.json"
            if heldout.is_file():
                per_seed[str(seed)]["heldout_loss"] = json.loads(heldout.read_text())["loss"]
            curves.setdefault(arm.name, {})[str(seed)] = _training_curve(run_dir)
        if not per_seed:
            continue
        mean, ci = stats.seed_mean_ci({s: r["accuracy"] for s, r in per_seed.items()}, arm_scores)
        steps = sorted({r["steps"] for r in per_seed.values()})
        arms[arm.name] = {"steps": steps[0] if len(steps) == 1 else steps, "seeds": per_seed, "mean": mean, "ci95": ci}
        losses = [r["heldout_loss"] for r in per_seed.values() if "heldout_loss" in r]
        if len(losses) == len(per_seed):
            arms[arm.name]["heldout_loss_mean"] = float(np.mean(losses))
        if subsets:
            arms[arm.name]["subsets"] = {name: float(np.mean([r["subsets"][name] for r in per_seed.values()]))
                                         for name in next(iter(per_seed.values()))["subsets"]}
        scores[arm.name] = arm_scores
    paired = {}
    if "sft" in scores:
        paired = {name: stats.paired_difference(s, scores["sft"]) for name, s in scores.items() if name != "sft"}
    checkpoints = plan.curve_models()
    models = {name: _model_result(plan.model_dir(name), subsets) for name in checkpoints}
    if "weak" not in models:  # the weak model is one of the Phase-1 curve points
        same = [n for n, c in checkpoints.items() if c == plan.weak_checkpoint()]
        models["weak"] = models[same[0]] if same else None
    diagnosed = diagnostics.collect({arm.name: {s: plan.arm_dir(arm.name, s) for s in plan.seeds} for arm in plan.arms})
    return {"arms": arms, "paired_vs_sft": paired, "selection": _selection(plan), "failed": failed,
            "models": {k: v for k, v in models.items() if v is not None}, "phase1": _phase1(plan, models),
            "training_curves": curves, "diagnostics": diagnosed}


def _selection(plan: StudyPlan) -> dict:
    summaries = [json.loads((plan.select_dir(s) / "summary.json").read_text()) for s in plan.seeds
                 if (plan.select_dir(s) / "summary.json").is_file()]
    if not summaries:
        return {}
    first = summaries[0]
    keys = ("weight_cv", "weight_min", "weight_max", "ess_fraction", "separation")
    return {"fraction": float(np.mean([s["selected_fraction"] for s in summaries])),
            "active_set_sizes": [s["active_set_size"] for s in summaries], "num_samples": first["num_samples"],
            **{k: first[k] for k in keys}, "entropy_strong_mean": first["entropy_strong"]["mean"],
            "entropy_weak_mean": first["entropy_weak"]["mean"], "warnings": first["warnings"]}


def _phase1(plan: StudyPlan, models: dict) -> dict:
    """Phase 1's steps, training curve and evaluated points (step -> accuracy / held-out loss)."""
    if plan.m1:
        return {"given": str(plan.m1)}
    points = {}
    for step in plan.cfg.study.curve_steps:
        if models.get(f"phase1_step_{step}"):
            points[str(step)] = models[f"phase1_step_{step}"]
    steps = None
    if (plan.phase1 / "checkpoints" / "latest").is_file():
        steps = trained_steps(plan.phase1)
        if models.get("m1"):
            points[str(steps)] = models["m1"]
    phase1 = {"steps": steps, "points": points, "training_curve": _training_curve(plan.phase1)}
    if steps is not None and models.get("m1"):
        window = budget.epoch_steps(1.0, plan.num_samples(), plan.cfg.training.global_batch_size)
        check = plateau_check(points, steps, window, models["m1"]["num_problems"])
        if check:
            phase1["plateau"] = check
    return phase1
