"""Has Phase 1 plateaued? The study's question is about the regime after SFT has saturated (the paper's
Sec. 1 and App. B.5), so `study.md` states, from the evaluated Phase-1 snapshots, how much held-out
accuracy and held-out loss still moved over the last `window` optimizer steps (by default one epoch of D).

Flat means both:
- the accuracy change is at most one standard error of the final accuracy, sqrt(p (1 - p) / n) (1.6
  points at n = 1,000, p = 0.5): a change a second evaluation of the same model could not tell apart;
- the held-out loss changed by at most LOSS_TOLERANCE of its final value.
"""

from __future__ import annotations

import math

LOSS_TOLERANCE = 0.05


def accuracy_standard_error(accuracy_percent: float, num_problems: int) -> float:
    """One binomial standard error of an accuracy, in points."""
    p = accuracy_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / num_problems)


def plateau_check(points: dict, final_step: int, window: int, num_problems: int) -> dict | None:
    """Change of held-out accuracy and loss from the last evaluated Phase-1 step at or before
    `final_step - window` to `final_step`. `points`: {step (int or str): {"accuracy": percent,
    "heldout_loss": nats (optional)}}. None when no evaluated step lies that far back."""
    by_step = {int(step): point for step, point in points.items()}
    if final_step not in by_step:
        return None
    earlier = [step for step in by_step if step <= final_step - window]
    if not earlier:
        return None
    start, end = by_step[max(earlier)], by_step[final_step]
    accuracy_change = end["accuracy"] - start["accuracy"]
    tolerance = accuracy_standard_error(end["accuracy"], num_problems)
    check = {"from_step": max(earlier), "to_step": final_step, "window": window,
             "accuracy_change": accuracy_change, "accuracy_tolerance": tolerance,
             "accuracy_flat": abs(accuracy_change) <= tolerance}
    if "heldout_loss" in start and "heldout_loss" in end:
        relative = (end["heldout_loss"] - start["heldout_loss"]) / end["heldout_loss"]
        check.update(loss_change_relative=relative, loss_flat=abs(relative) <= LOSS_TOLERANCE)
    check["flat"] = check["accuracy_flat"] and check.get("loss_flat", True)
    return check


def describe(check: dict) -> str:
    """One sentence for study.md."""
    loss = (f", held-out loss {check['loss_change_relative']:+.1%}" if "loss_change_relative" in check else "")
    verdict = "**flat** (a plateau)" if check["flat"] else "**not flat** (still learning)"
    return (f"From step {check['from_step']} to {check['to_step']} (the last {check['window']} steps): accuracy "
            f"{check['accuracy_change']:+.1f} points (one standard error: {check['accuracy_tolerance']:.1f}){loss} "
            f"-> {verdict}; criterion: |accuracy change| <= one standard error and |loss change| <= "
            f"{LOSS_TOLERANCE:.0%}.")
