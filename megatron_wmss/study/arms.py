"""The arms of a study. Every arm starts from the same Phase-1 model M1 and trains the same number of
optimizer steps with the same learning-rate schedule; they differ only in objective and data:

  sft          plain SFT continued on all of D (the baseline every other arm is compared to)
  sft_active   plain SFT on D_active (the WD-DS selection without the logit mixing: selection-only control)
  random       plain SFT on a uniform random subset of D with |D_active| distinct samples (is the
               selection better than noise?)
  wdjt         WD-JT (Eq. 5-6) on D_active with weak model W, lambda = wmss.lam (the method)
  wdjt_frozen  the same with the weak branch frozen (wmss.freeze_weak)
  neftune      NEFTune on all of D (embedding noise, recipe section `neftune`; the paper's baseline, App. E.6)
  undial       UNDIAL on all of D (self-distillation with adjusted logits, section `undial`; App. E.6)
  wdjt_lam<x>  WD-JT with lambda = x (the lambda sweep, `--lam`; x = wmss.lam is the `wdjt` arm)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    objective: str  # training.objective: "sft", "wmss", "neftune" or "undial"
    data: str  # "all" (D), "active" (D_active of the seed), "random" (uniform subset of |D_active|)
    overrides: tuple = ()  # extra recipe overrides (section.option=value)


def lam_arm_name(lam: float) -> str:
    return f"wdjt_lam{lam:g}"


def build_arms(names: list[str], lams: list[float], recipe_lam: float) -> list[Arm]:
    """The arms named (config.STUDY_ARMS) followed by one WD-JT arm per lambda of the sweep; a lambda equal
    to the recipe's (`wmss.lam`) is the `wdjt` arm itself when that arm is run, not trained twice."""
    known = {
        "sft": Arm("sft", "sft", "all"),
        "sft_active": Arm("sft_active", "sft", "active"),
        "random": Arm("random", "sft", "random"),
        "wdjt": Arm("wdjt", "wmss", "active"),
        "wdjt_frozen": Arm("wdjt_frozen", "wmss", "active", ("wmss.freeze_weak=true",)),
        "neftune": Arm("neftune", "neftune", "all"),
        "undial": Arm("undial", "undial", "all"),
    }
    arms = [known[n] for n in names]
    for lam in lams:
        if "wdjt" in names and abs(lam - recipe_lam) < 1e-12:
            continue
        arm = Arm(lam_arm_name(lam), "wmss", "active", (f"wmss.lam={lam:g}",))
        if arm.name not in {a.name for a in arms}:
            arms.append(arm)
    return arms
