"""diagnose.md: the statistics of every diagnosed model side by side with their changes against a
reference model (the paper's Table 7 layout: weak, strong before, strong after, Delta = after - before;
Table 6 is the same layout with SFT as the reference), then Delta H and lambda_cross."""

from __future__ import annotations

# (key, label) in table order: Table 6's rows, then Table 7's.
ROWS = (
    ("target_logit_mean", "Target logit z_target (Table 6)"),
    ("distractor_logit_mean", "Distractor mean z_bg (Table 6)"),
    ("gap", "Target-to-background gap (Table 6)"),
    ("logit_mean", "Mean logit z_mean (Table 7)"),
    ("logit_std", "Logit std sigma (Tables 6-7)"),
    ("centered_norm", "Centered norm (Eq. 48)"),
    ("max_logit", "Max logit, mean per position"),
    ("min_logit", "Min logit, mean per position"),
    ("max_logit_extreme", "Max logit (extreme)"),
    ("min_logit_extreme", "Min logit (extreme)"),
    ("l2_norm", "L2 norm"),
    ("entropy", "Entropy H (nats)"),
    ("max_prob", "Max prob"),
)


def delta(value: float, reference: float) -> str:
    """'+1.41 (+4.2%)': the change and, when the reference is not 0, the relative change."""
    text = f"{value - reference:+.3g}"
    if reference:
        text += f" ({100.0 * (value - reference) / abs(reference):+.1f}%)"
    return text


def statistics_table(models: dict, reference: str | None) -> list[str]:
    """Markdown: one row per statistic and a column per model; then, when `reference` is among `models`,
    a second table of the same shape with each other model's change against it (two narrow tables read
    better than one with a value and a Delta column per model)."""
    names = list(models)
    others = [n for n in names if reference in models and n != reference]
    rows = [(key, label) for key, label in ROWS if all(key in models[n] for n in names)]
    lines = ["| statistic | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{models[n][key]:.4g}" for n in names) + " |" for key, label in rows]
    if others:
        lines += ["", f"Change against `{reference}` (Δ, in % of `{reference}`'s value):", "",
                  "| statistic | " + " | ".join(f"Δ `{n}` − `{reference}`" for n in others) + " |",
                  "|---|" + "---|" * len(others)]
        lines += [f"| {label} | " + " | ".join(delta(models[n][key], models[reference][key]) for n in others) + " |"
                  for key, label in rows]
    return lines


def summary_lines(result: dict) -> list[str]:
    """Delta H and lambda_cross of the weak/strong pair, or why they are missing."""
    weak, strong = result.get("weak"), result.get("strong")
    if result.get("lambda_cross") is None:
        return [f"Entropy separation and lambda_cross need both the weak (`{weak}`) and the strong (`{strong}`) "
                "model among the diagnosed ones."]
    return [f"Entropy separation (App. B.5) ΔH = H(`{weak}`) − H(`{strong}`) = {result['entropy_separation']:+.4f} nats.",
            "",
            f"Centered-norm sensitivity ratio (Eq. 16) α = (‖z̃_{strong}‖ / ‖z̃_{weak}‖)² = {result['alpha']:.4f}; "
            f"predicted gradient-share crossover (Eq. 17) **λ_cross = 1 / (1 + √α) = {result['lambda_cross']:.3f}**."]


def markdown(result: dict) -> str:
    models = result["models"]
    positions = sorted({m["positions"] for m in models.values()})
    lines = ["# `wmss diagnose`: logit statistics (paper App. B.4, Tables 6-7; App. D)", "",
             f"{len(result['samples'])} samples (seed {result['seed']}), {positions[0] if len(positions) == 1 else positions} "
             "supervised positions; means over positions (max / min logit: extremes). Definitions: docs/diagnostics.md.", ""]
    lines += statistics_table(models, result.get("strong"))
    lines += ["", *summary_lines(result), ""]
    return "\n".join(lines)
