"""The jobs of a study and where each writes, as production `wmss` commands.

  M0/                      `wmss convert hf-to-megatron` of model.hf_path (unless --m1 and --weak-model given)
  phase1/                  `wmss train` SFT from M0 for wmss.sft_steps (M1 = phase1/export/model); snapshots
                           after the curve steps and the weak model's step (wmss.weak=phase1_step:N)
  select/seed_<s>/         `wmss select` weak W vs strong M1 (scored once, the draw per seed), random_set.txt
  arms/<arm>/seed_<s>/     `wmss train` from M1, study.stage_steps steps; hf/ (`wmss convert`), eval/ (`wmss eval`),
                           diagnose/ (`wmss diagnose`: weak, M1 and the arm's model)
  models/<name>/           M1, the weak model and the Phase-1 curve points: hf/, eval/
  logs/                    one log per job

Every arm's `wmss train` gets the same steps and LR schedule (the recipe's training section), its
seed as training.seed and data.seed, and training.data_phase=1 (its own shuffles, never Phase 1's).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megatron_wmss.study.arms import Arm
from megatron_wmss.study.runner import Job

RANDOM_STREAM = 0x72616E64  # separates the random arm's subset draw from every other use of the seed


def wmss_launcher(nproc: int) -> list[str]:
    """How a `wmss` subcommand is started: this interpreter, or torchrun with `nproc` ranks."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "megatron_wmss.cli"]
    return [sys.executable, "-m", "megatron_wmss.cli"]


def random_subset(sample_ids: list[str], size: int, seed: int) -> list[str]:
    """`size` distinct sample ids drawn uniformly without replacement (in dataset order)."""
    if not 1 <= size <= len(sample_ids):
        raise ValueError(f"random subset of {size} from {len(sample_ids)} samples")
    chosen = np.random.default_rng([int(seed), RANDOM_STREAM]).choice(len(sample_ids), size=size, replace=False)
    return [sample_ids[i] for i in np.sort(chosen)]


@dataclass
class StudyPlan:
    cfg: object  # the resolved Config (written to <out>/study.yaml)
    out: Path
    arms: list  # [Arm]
    nproc: int = 1
    m1: Path | None = None  # a given M1 (megatron model checkpoint): Phase 1 is not trained
    weak_model: Path | None = None  # a given weak model checkpoint

    # ---- paths
    @property
    def recipe(self) -> Path:
        return self.out / "study.yaml"

    @property
    def m0(self) -> Path:
        return self.out / "M0"

    @property
    def phase1(self) -> Path:
        return self.out / "phase1"

    def m1_checkpoint(self) -> Path:
        return self.m1 or self.phase1 / "export" / "model"

    def weak_checkpoint(self) -> Path:
        from megatron_wmss.pipeline import weak_step
        from megatron_wmss.training.loop import snapshot_dir

        if self.weak_model:
            return self.weak_model
        step = weak_step(self.cfg.wmss.weak)
        return self.m0 if step is None else snapshot_dir(self.phase1, step) / "model"

    def select_dir(self, seed: int) -> Path:
        return self.out / "select" / f"seed_{seed}"

    def arm_dir(self, arm: str, seed: int) -> Path:
        return self.out / "arms" / arm / f"seed_{seed}"

    def model_dir(self, name: str) -> Path:
        return self.out / "models" / name

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.study.seeds)

    # ---- budgets
    def num_samples(self) -> int:
        from megatron_wmss.data import open_sft_dataset

        return len(open_sft_dataset(self.cfg.data))

    def phase1_steps(self) -> int:
        from megatron_wmss import budget

        return budget.phase1_steps(self.cfg, self.num_samples())

    def stage_steps(self) -> int:
        """study.stage_steps, else one epoch of the first seed's D_active (the paper's WD-JT budget)."""
        from megatron_wmss import budget

        if self.cfg.study.stage_steps:
            return self.cfg.study.stage_steps
        active = (self.select_dir(self.seeds[0]) / "active_set.txt").read_text().split()
        return budget.epoch_steps(1.0, len(active), self.cfg.training.global_batch_size)

    def stage_lr(self) -> list[str]:
        """The arms' peak learning rate as an override (study.stage_lr), or none (training.lr)."""
        lr = self.cfg.study.stage_lr
        return [] if lr is None else [f"training.lr={lr!r}", f"training.min_lr={min(lr, self.cfg.training.min_lr)!r}"]

    def phase1_export_steps(self) -> list[int]:
        from megatron_wmss.pipeline import weak_step

        steps = set(self.cfg.study.curve_steps)
        if weak_step(self.cfg.wmss.weak) is not None and not self.weak_model:
            steps.add(weak_step(self.cfg.wmss.weak))
        return sorted(steps)

    def curve_models(self) -> dict:
        """Evaluated models besides the arms: name -> megatron checkpoint (M1, weak, Phase-1 curve points)."""
        from megatron_wmss.training.loop import snapshot_dir

        models = {"m1": self.m1_checkpoint()}
        if not self.m1:
            for step in self.cfg.study.curve_steps:
                models[f"phase1_step_{step}"] = snapshot_dir(self.phase1, step) / "model"
        if self.weak_checkpoint() not in models.values():  # else it is evaluated as a curve point
            models["weak"] = self.weak_checkpoint()
        return models

    # ---- jobs
    def _wmss(self, *args: str, distributed: bool = False) -> list[str]:
        return (wmss_launcher(self.nproc) if distributed else wmss_launcher(1)) + list(args)

    def _marker_job(self, name: str, directory: Path, commands, deps=(), alone: bool = False) -> Job:
        """A job complete when `directory/DONE` exists (written after its commands succeed)."""
        return Job(name, is_done=lambda: (directory / "DONE").is_file(), commands=commands, deps=tuple(deps),
                   after=lambda: (directory / "DONE").write_text(""), alone=alone)

    def setup_jobs(self) -> list[Job]:
        jobs = []
        needs_m0 = not (self.m1 and self.weak_model)
        if needs_m0:
            p = self.cfg.parallel
            jobs.append(Job("convert_m0", is_done=lambda: (self.m0 / "hf_config.json").is_file(),
                            commands=lambda: [self._wmss("convert", "hf-to-megatron", "--hf", self.cfg.model.hf_path,
                                                         "--out", str(self.m0), "--tp", str(p.tp), "--pp", str(p.pp),
                                                         "--overwrite")]))
        if not self.m1:
            jobs.append(self._marker_job("phase1", self.phase1, lambda: [self._wmss(
                "train", "--config", str(self.recipe), "--init-model", str(self.m0),
                "training.objective=sft", f"training.train_iters={self.phase1_steps()}", "training.data_phase=0",
                f"training.export_steps={self.phase1_export_steps()}", f"run_dir={self.phase1}",
                distributed=True)], deps=["convert_m0"], alone=True))
        first = self.seeds[0]
        for seed in self.seeds:
            jobs.append(self._select_job(seed, first))
            jobs.append(Job(f"random_set/seed_{seed}", is_done=lambda s=seed: (self.select_dir(s) / "random_set.txt").is_file(),
                            function=lambda s=seed: self._write_random_set(s), deps=(f"select/seed_{seed}",)))
        return jobs

    def _select_job(self, seed: int, first: int) -> Job:
        out = self.select_dir(seed)

        def commands():
            if seed != first and not (out / "scores").is_dir():  # the entropies do not depend on the seed
                shutil.copytree(self.select_dir(first) / "scores", out / "scores")
            return [self._wmss("select", "--config", str(self.recipe), "--weak", str(self.weak_checkpoint()),
                               "--strong", str(self.m1_checkpoint()), "--out", str(out), "--seed", str(seed),
                               distributed=True)]

        deps = ["phase1", "convert_m0"] + ([f"select/seed_{first}"] if seed != first else [])
        return Job(f"select/seed_{seed}", commands=commands, deps=tuple(deps),
                   is_done=lambda: (out / "active_set.txt").is_file() and (out / "summary.json").is_file())

    def _write_random_set(self, seed: int) -> None:
        from megatron_wmss.data import open_samples

        active = (self.select_dir(seed) / "active_set.txt").read_text().split()
        ids = random_subset(open_samples(self.cfg.data).sample_ids, len(set(active)), seed)
        tmp = self.select_dir(seed) / "random_set.txt.tmp"
        tmp.write_text("".join(i + "\n" for i in ids))
        tmp.replace(self.select_dir(seed) / "random_set.txt")

    def arm_jobs(self, arm: Arm, seed: int) -> list[Job]:
        run_dir, select = self.arm_dir(arm.name, seed), self.select_dir(seed)
        name = f"{arm.name}/seed_{seed}"

        def train_command():
            init = (["--init-strong", str(self.m1_checkpoint()), "--init-weak", str(self.weak_checkpoint())]
                    if arm.objective == "wmss" else ["--init-model", str(self.m1_checkpoint())])
            data = {"all": [], "active": ["--active-set", str(select / "active_set.txt")],
                    "random": ["--active-set", str(select / "random_set.txt")]}[arm.data]
            return [self._wmss("train", "--config", str(self.recipe), *init, *data,
                               f"training.objective={arm.objective}", f"training.train_iters={self.stage_steps()}",
                               f"training.seed={seed}", f"data.seed={seed}", "training.data_phase=1",
                               "training.export_steps=[]", f"run_dir={run_dir}", *self.stage_lr(), *arm.overrides,
                               distributed=True)]

        branch = run_dir / "export" / ("strong" if arm.objective == "wmss" else "model")
        deps = ("phase1", f"select/seed_{seed}", f"random_set/seed_{seed}")
        return [self._marker_job(f"train/{name}", run_dir, train_command, deps=deps),
                *self.eval_jobs(name, branch, run_dir, deps=(f"train/{name}",)),
                *([self.diagnose_job(name, branch, run_dir, deps=(f"train/{name}",))] if self.cfg.study.diagnose else [])]

    def diagnose_job(self, name: str, branch: Path, run_dir: Path, deps=()) -> Job:
        """`wmss diagnose` of the arm's model against the weak model and M1 (strong before) into
        `run_dir/diagnose`: the same samples (training.seed) for every arm (docs/diagnostics.md)."""
        out = run_dir / "diagnose"
        return Job(f"diagnose/{name}", is_done=lambda: (out / "diagnose.json").is_file(), deps=tuple(deps),
                   commands=lambda: [self._wmss("diagnose", "--config", str(self.recipe),
                                                "--model", f"weak={self.weak_checkpoint()}",
                                                "--model", f"strong_before={self.m1_checkpoint()}",
                                                "--model", f"strong_after={branch}", "--out", str(out),
                                                distributed=True)])

    def eval_jobs(self, name: str, checkpoint: Path, directory: Path, deps=()) -> list[Job]:
        """Export `checkpoint` to `directory/hf`, evaluate it into `directory/eval` and (study.heldout_data)
        measure its held-out loss: one process (megatron_wmss/commands/evaluate_model.py), each part resumable."""
        hf, ev = directory / "hf", directory / "eval"
        heldout = self.cfg.study.heldout_data

        def command():
            cmd = [sys.executable, "-m", "megatron_wmss.commands.evaluate_model", "--load", str(checkpoint), "--hf", str(hf)]
            if heldout:
                cmd += ["--heldout-data", heldout, "--seq-length", str(self.cfg.data.seq_length),
                        "--heldout-out", str(ev / "heldout_loss.json")]
            return [cmd + ([] if _eval_complete(ev) else ["--", *self.eval_arguments(hf, ev)[1:]])]

        def is_done():
            return _eval_complete(ev) and (not heldout or (ev / "heldout_loss.json").is_file())

        return [Job(f"eval/{name}", is_done=is_done, commands=command, deps=tuple(deps))]

    def eval_arguments(self, hf: Path, ev: Path) -> list[str]:
        """`wmss eval ...` (from "eval" on) of the recipe's eval section; study.benchmark_file replaces
        eval.benchmarks."""
        from megatron_wmss.pipeline import eval_command

        args = eval_command(self.cfg.eval, hf, ev, f"{self.cfg.data.path}.manifest.json")
        if self.cfg.study.benchmark_file:
            at = args.index("--benchmarks")
            args[at:at + 2] = ["--benchmark-file", self.cfg.study.benchmark_file]
        return args + ["--no-progress"]

    def jobs(self) -> list[Job]:
        jobs = self.setup_jobs()
        for name, checkpoint in self.curve_models().items():
            deps = ("phase1", "convert_m0")
            jobs += self.eval_jobs(name, checkpoint, self.model_dir(name), deps=deps)
        for seed in self.seeds:
            for arm in self.arms:
                jobs += self.arm_jobs(arm, seed)
        return jobs


def _eval_complete(ev: Path) -> bool:
    summary = ev / "summary.json"
    return summary.is_file() and bool(json.loads(summary.read_text()).get("benchmarks"))
