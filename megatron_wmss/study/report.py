"""`study.md` (tables) and `study.png` (accuracy per arm with CIs; Phase-1 curve; training curves; the
lambda sweep with the predicted lambda_cross, when the study has a sweep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megatron_wmss.study import diagnostics
from megatron_wmss.study.plateau import describe

DESCRIPTIONS = {
    "sft": "SFT continued on D (reference)",
    "sft_active": "SFT on D_active (selection only)",
    "random": "SFT on a random subset of \\|D_active\\| (selection = noise?)",
    "wdjt": "WD-JT on D_active (WMSS)",
    "wdjt_frozen": "WD-JT, weak branch frozen",
    "neftune": "NEFTune on D (embedding noise, App. E.6)",
    "undial": "UNDIAL on D (adjusted-logit self-distillation, App. E.6)",
}


def _describe(arm: str) -> str:
    if arm.startswith("wdjt_lam"):
        return f"WD-JT, lambda = {arm[len('wdjt_lam'):]}"
    return DESCRIPTIONS.get(arm, arm)


def _ci(ci) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def markdown(result: dict, meta: dict) -> str:
    seeds = meta["seeds"]
    lines = [f"# `wmss study`: {meta['title']}", "",
             f"Command: `{meta['command']}`", "",
             f"Every arm starts from the same Phase-1 model M1 and trains **{meta['stage_steps']} optimizer steps** "
             f"with the same learning-rate schedule; seeds {', '.join(map(str, seeds))} (data order, WD-DS draw, "
             "random subset). Accuracy: greedy, graded with math-verify, in percent "
             f"({meta['benchmarks']}). CI over seeds: Student's t (one seed: bootstrap over problems). "
             "Paired difference to `sft`: mean over seeds, 95% bootstrap CI over problems x seeds.", "",
             "| arm | what | steps | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | 95% CI | vs sft | 95% CI | held-out CE |",
             "|---|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|"]
    for name, arm in result["arms"].items():
        per = [f"{arm['seeds'][str(s)]['accuracy']:.1f}" if str(s) in arm["seeds"] else "failed" for s in seeds]
        diff = result["paired_vs_sft"].get(name)
        vs = f"{diff['mean_diff']:+.1f} | {_ci(diff['ci95'])}" if diff else "— | —"
        loss = f"{arm['heldout_loss_mean']:.4f}" if "heldout_loss_mean" in arm else "—"
        lines.append(f"| `{name}` | {_describe(name)} | {arm['steps']} | " + " | ".join(per)
                     + f" | **{arm['mean']:.1f}** | {_ci(arm['ci95'])} | {vs} | {loss} |")
    for name, errors in result["failed"].items():
        for seed, error in errors.items():
            first = error.splitlines()[0] if error else "failed"
            lines.append(f"\n**Failed: `{name}` seed {seed}**: {first}")
    lines += _subset_table(result)
    models = result["models"]
    if models:
        lines += ["", "Starting points: " + ", ".join(
            f"{k} {v['accuracy']:.1f}%" + (f" (held-out loss {v['heldout_loss']:.4f})" if "heldout_loss" in v else "")
            for k, v in models.items() if not k.startswith("phase1_step_")) + "."]
    p1 = result["phase1"]
    if p1.get("points"):
        lines += ["", f"## Phase 1 (SFT from M0, {p1['steps']} steps): is it a plateau?", "",
                  "| step | held-out accuracy | held-out loss |", "|---|---|---|"]
        for step, point in sorted(p1["points"].items(), key=lambda kv: int(kv[0])):
            loss = f"{point['heldout_loss']:.4f}" if "heldout_loss" in point else "—"
            lines.append(f"| {step} | {point['accuracy']:.1f}% | {loss} |")
        if p1.get("plateau"):
            lines += ["", describe(p1["plateau"])]
    sel = result["selection"]
    if sel:
        lines += ["", "## WD-DS selection", "",
                  f"Weak model: {meta['weak']}. Selected fraction {sel['fraction']:.3f} "
                  f"(active sets {sel['active_set_sizes']} of {sel['num_samples']}); p_i*N in "
                  f"[{sel['weight_min']:.2f}, {sel['weight_max']:.2f}], coefficient of variation {sel['weight_cv']:.3f}, "
                  f"effective sample size {sel['ess_fraction']:.3f} N; mean entropy strong {sel['entropy_strong_mean']:.3f} "
                  f"vs weak {sel['entropy_weak_mean']:.3f} nats (separation {sel['separation']:.3f})."]
        lines += [f"- warning: {w}" for w in sel["warnings"]]
    lines += diagnostics.markdown(result.get("diagnostics") or {})
    if meta.get("wall"):
        lines += ["", f"Wall time of this study's jobs (this invocation): {meta['wall']}."]
    lines += ["", "![study](study.png)", ""]
    return "\n".join(lines)


def _subset_table(result: dict) -> list[str]:
    """Accuracy per subset of the held-out problems (e.g. easy / hard): arms (mean over seeds), then the
    evaluated starting points and Phase-1 snapshots."""
    rows = [(f"`{name}`", arm["subsets"]) for name, arm in result["arms"].items() if "subsets" in arm]
    rows += [(name, model["subsets"]) for name, model in result["models"].items() if "subsets" in model]
    if not rows:
        return []
    names = list(rows[0][1])
    lines = ["", "Accuracy by subset of the held-out problems (%; arms: mean over seeds):", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    return lines + [f"| {label} | " + " | ".join(f"{acc.get(n, float('nan')):.1f}" for n in names) + " |"
                    for label, acc in rows]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = diagnostics.sweep_points(result, (result.get("meta") or {}).get("lam"))
    fig, axes = plt.subplots(1, 4 if len(sweep) > 1 else 3, figsize=(21 if len(sweep) > 1 else 16, 4.5))
    ax = axes[0]
    names = list(result["arms"])
    for i, name in enumerate(names):
        arm = result["arms"][name]
        lo, hi = arm["ci95"]
        ax.errorbar(i, arm["mean"], yerr=[[arm["mean"] - lo], [hi - arm["mean"]]], fmt="o", capsize=5, color="C0")
        values = [s["accuracy"] for s in arm["seeds"].values()]
        ax.scatter(np.full(len(values), i + 0.12), values, s=12, color="gray", zorder=3)
    if "m1" in result["models"]:
        ax.axhline(result["models"]["m1"]["accuracy"], color="C3", ls="--", lw=1, label="M1 (start)")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("accuracy per arm: mean, 95% CI, seeds")
    ax = axes[1]
    p1 = result["phase1"]
    curve = p1.get("training_curve") or []
    if curve:
        ax.plot(*zip(*curve), color="C0", alpha=0.5, lw=1, label="train CE")
    points = sorted(((int(k), v) for k, v in (p1.get("points") or {}).items()))
    if points and any("heldout_loss" in v for _, v in points):
        ax.plot([s for s, v in points if "heldout_loss" in v], [v["heldout_loss"] for _, v in points if "heldout_loss" in v],
                "o-", color="C1", label="held-out CE")
    ax.set_xlabel("Phase-1 step")
    ax.set_ylabel("CE (nats / supervised token)")
    ax.set_yscale("log")
    if points:
        twin = ax.twinx()
        twin.plot([s for s, _ in points], [v["accuracy"] for _, v in points], "s-", color="C2", label="held-out acc")
        twin.set_ylabel("held-out accuracy (%)")
        twin.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("Phase 1 (SFT from M0)")
    ax = axes[2]
    for i, (name, per_seed) in enumerate(result["training_curves"].items()):
        runs = [np.array(c) for c in per_seed.values() if c]
        if not runs:
            continue
        length = min(len(r) for r in runs)
        mean = np.mean([r[:length, 1] for r in runs], axis=0)
        window = max(1, length // 20)
        smooth = np.convolve(mean, np.ones(window) / window, mode="valid")
        ax.plot(runs[0][window - 1:length, 0], smooth, color=f"C{i % 10}", label=name)
    ax.set_xlabel("step of the second stage")
    ax.set_ylabel("strong model's training CE (mean over seeds)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("training curves")
    if len(sweep) > 1:
        plot_sweep(axes[3], sweep, (result.get("diagnostics") or {}).get("lambda_cross"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(ax, sweep: list, lam_cross: float | None) -> None:
    """Accuracy against lambda (mean and 95% CI over seeds) with the predicted crossover of Eq. 17."""
    lams, means, cis = zip(*sweep)
    ax.errorbar(lams, means, yerr=[[m - c[0] for m, c in zip(means, cis)], [c[1] - m for m, c in zip(means, cis)]],
                fmt="o-", capsize=4, color="C0", label="WD-JT")
    if lam_cross is not None:
        ax.axvline(lam_cross, color="C3", ls="--", lw=1, label=f"predicted λ_cross = {lam_cross:.3f} (Eq. 17)")
    ax.set_xlabel("λ (weight of the strong logits, Eq. 5)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("λ sweep")
