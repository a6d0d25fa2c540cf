"""The logit diagnostics of a study (`wmss diagnose` per arm and seed, docs/diagnostics.md): collected into
study.json's "diagnostics" and rendered as study.md's Table 7-style table (weak, M1 = strong before, each
arm's model = strong after, averaged over seeds; Delta against M1) with Delta H and lambda_cross."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megatron_wmss.diagnostics.report import statistics_table


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(arm_dirs: dict) -> dict:
    """From `arm_dirs` (arm -> {seed: run directory}) the diagnose.json files that exist:
    {"models": {"weak": stats, "m1": stats, ARM: stats averaged over its seeds (with "seeds": n)},
     "entropy_separation", "alpha", "lambda_cross"} ({} when no arm was diagnosed). The weak model and
    M1 are diagnosed on the same samples by every job; the first one found is used."""
    first, models = None, {}
    for arm, seeds in arm_dirs.items():
        found = [d for d in (_read(Path(run) / "diagnose" / "diagnose.json") for run in seeds.values()) if d]
        if not found:
            continue
        first = first or found[0]
        stats = [d["models"]["strong_after"] for d in found]
        keys = [k for k, v in stats[0].items() if isinstance(v, (int, float))]
        models[arm] = {k: float(np.mean([s[k] for s in stats])) for k in keys}
        models[arm]["seeds"] = len(found)
    if first is None:
        return {}
    base = {"weak": first["models"]["weak"], "m1": first["models"]["strong_before"]}
    return {"models": {**base, **models}, "entropy_separation": first["entropy_separation"],
            "alpha": first["alpha"], "lambda_cross": first["lambda_cross"]}


def markdown(diagnostics: dict) -> list[str]:
    """study.md's section (no lines when nothing was diagnosed)."""
    if not diagnostics:
        return []
    models = diagnostics["models"]
    lines = ["", "## Logit diagnostics (paper App. B.4, Tables 6-7)", "",
             "`wmss diagnose` on the same random training samples for every model: the weak model, M1 (strong "
             "before) and each arm's trained model (strong after; mean over seeds), Δ against M1. Means over the "
             "supervised positions (the *_extreme rows: over all positions); definitions in docs/diagnostics.md.", ""]
    lines += statistics_table(models, "m1")
    if diagnostics.get("lambda_cross") is not None:
        lines += ["", f"Entropy separation ΔH = H(weak) − H(M1) = {diagnostics['entropy_separation']:+.4f} nats; "
                  f"α = (‖z̃_M1‖ / ‖z̃_weak‖)² = {diagnostics['alpha']:.4f}, predicted crossover "
                  f"**λ_cross = 1/(1+√α) = {diagnostics['lambda_cross']:.3f}** (Eq. 17; marked on the λ sweep "
                  "in study.png when the study has one)."]
    return lines


def sweep_points(result: dict, recipe_lam: float | None) -> list[tuple[float, float, list]]:
    """(lambda, mean accuracy, 95% CI) of every WD-JT arm of the lambda sweep (`wdjt_lam<x>`, and `wdjt` at
    the recipe's wmss.lam), sorted by lambda."""
    points = []
    for name, arm in result["arms"].items():
        if name.startswith("wdjt_lam"):
            points.append((float(name[len("wdjt_lam"):]), arm["mean"], arm["ci95"]))
        elif name == "wdjt" and recipe_lam is not None:
            points.append((float(recipe_lam), arm["mean"], arm["ci95"]))
    return sorted(points)
