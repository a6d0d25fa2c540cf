"""Algorithm 1 as library functions: `run_pipeline` trains (or resumes) every phase of a `wmss run`
(megatron_wmss/commands/run.py, whose docstring describes the run directory), `finish` exports the final
model to HF and evaluates it.
"""

from __future__ import annotations

import copy
import fcntl
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from megatron_wmss.errors import ConfigError


@dataclass
class PipelineConfig:
    """Algorithm 1's schedule (recipe section `wmss`): K, the phases' budgets and the first weak model."""

    iterations: int = 1  # K in Algorithm 1
    sft_epochs: float = 1.0  # Phase 1
    # Budgets in optimizer steps (null = the paper's epoch rule: Phase 1 = sft_epochs of D, each WD-JT
    # iteration = 1 epoch of D_active, the SFT baseline = sft_epochs + K epochs of D)
    sft_steps: Optional[int] = None
    wdjt_steps: Optional[int] = None  # per WD-JT iteration
    baseline_steps: Optional[int] = None
    step_matched: bool = False  # baseline steps = Phase-1 steps + all WD-JT steps
    # weak model of the first WD-DS / WD-JT iteration: "m0" (Algorithm 1) or "phase1_step:N" (the Phase-1
    # checkpoint after N steps, as in the paper's entropy-separation study, App. B.5)
    weak: str = "m0"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.iterations < 1:
            raise ConfigError("wmss.iterations: K must be >= 1")
        if not self.sft_epochs > 0:
            raise ConfigError("wmss.sft_epochs: must be > 0")
        for name in ("sft_steps", "wdjt_steps", "baseline_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"wmss.{name}: must be >= 1 (or null)")
        if self.step_matched and self.baseline_steps:
            raise ConfigError("wmss.step_matched: step_matched derives the baseline's steps; unset "
                              "wmss.baseline_steps (or step_matched=false)")
        try:
            weak_step(self.weak)
        except ValueError as err:
            raise ConfigError(f"wmss.weak: {err}") from None


def weak_step(spec: str) -> int | None:
    """`wmss.weak` -> None for "m0", N for "phase1_step:N"; ValueError otherwise."""
    if spec == "m0":
        return None
    head, _, number = str(spec).partition(":")
    if head == "phase1_step" and number.isdigit() and int(number) >= 1:
        return int(number)
    raise ValueError(f"expected m0 or phase1_step:N with N >= 1, got {spec!r}")


def _done(path: Path) -> bool:
    return (path / "DONE").is_file()


def _mark_done(path: Path) -> None:
    if dist.get_rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
        (path / "DONE").write_text("")
    dist.barrier()


_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                  "MASTER_ADDR", "MASTER_PORT")


def _wmss_subprocess(*args: str) -> None:
    """A single-process `wmss` subcommand (conversion, evaluation) in a fresh interpreter, outside this
    job's process group (torchrun's variables removed)."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS and not k.startswith("TORCHELASTIC")}
    subprocess.run([sys.executable, "-m", "megatron_wmss.cli", *args], check=True, env=env)


def _phase_config(cfg, objective: str, steps: int, run_dir: Path, phase: int, export_steps=()):
    """The recipe of one training phase: `steps` optimizer steps, its own data order (`phase`)."""
    phase_cfg = copy.deepcopy(cfg)
    phase_cfg.training.objective = objective
    phase_cfg.training.train_iters = steps
    phase_cfg.training.data_phase = phase
    phase_cfg.training.export_steps = list(export_steps)
    phase_cfg.run_dir = str(run_dir)
    return phase_cfg


def _log(message: str) -> None:
    if dist.get_rank() == 0:
        print(f"[wmss run] {message}", flush=True)


def _train_phase(cfg, *, dataset, hf_config, tokenizer_dir, init, run_dir: Path, name: str) -> dict:
    """Train one phase (resumable) and export its branches to <run_dir>/export/."""
    from megatron_wmss.training.loop import train

    if not _done(run_dir):
        _log(f"{name}: training in {run_dir}")
        result = train(cfg, dataset=dataset, hf_config=hf_config, init=init, run_dir=run_dir, name=name,
                       tokenizer_dir=tokenizer_dir)
        result.export(run_dir / "export", hf_config, tokenizer_dir)
        _mark_done(run_dir)
    return {branch.name: branch for branch in (run_dir / "export").iterdir() if branch.is_dir()}


def _wait_for_file(path: Path, what: str, *, poll_s: float = 5.0, report_s: float = 60.0) -> None:
    """Poll until `path` exists; rank 1 reports progress every `report_s`. No collective: the wait may
    outlast the process group's timeout."""
    start = reported = time.monotonic()
    while not path.is_file():
        time.sleep(poll_s)
        if dist.get_rank() == 1 and time.monotonic() - reported >= report_s:
            reported = time.monotonic()
            print(f"[wmss run] waiting for {what} ({reported - start:.0f} s so far)", flush=True)


def _prepare_m0(cfg, run_dir: Path) -> Path:
    """M0 as a megatron model checkpoint, converted once from the HF directory model.hf_path by rank 0;
    the other ranks poll for the converted checkpoint (the conversion of a large model can outlast the
    600 s timeout of a collective barrier)."""
    m0 = run_dir / "M0"
    converted = m0 / "hf_config.json"  # written last: the conversion's output directory appears atomically
    if converted.is_file():
        return m0
    if dist.get_rank() == 0:
        # The WMSS run and its baseline may share run_dir and start together: one converts, one waits.
        with open(run_dir / ".M0.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not converted.is_file():
                _log(f"converting {cfg.model.hf_path} -> {m0}")
                _wmss_subprocess("convert", "hf-to-megatron", "--hf", cfg.model.hf_path, "--out", str(m0),
                                 "--tp", str(cfg.parallel.tp), "--pp", str(cfg.parallel.pp), "--overwrite")
    else:
        _wait_for_file(converted, f"rank 0 to convert {cfg.model.hf_path} -> {m0}")
    return m0


def _active_sizes(run_dir: Path, iterations: int) -> list[int] | None:
    """The WMSS run's active-set sizes (distinct samples trained per WD-JT iteration), if all are selected."""
    sizes = []
    for t in range(1, iterations + 1):
        summary = run_dir / f"iter_{t}" / "select" / "summary.json"
        if not summary.is_file():
            return None
        sizes.append(json.loads(summary.read_text())["active_set_size"])
    return sizes


def _record_steps(run_dir: Path, key: str, steps) -> None:
    """`<run_dir>/steps.json`: the optimizer steps of every phase, as trained (read by reports)."""
    if dist.get_rank() != 0:
        return
    path = run_dir / "steps.json"
    with open(run_dir / ".steps.lock", "w") as lock:  # the WMSS run and its baseline may write at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(path.read_text()) if path.is_file() else {}
        record[key] = steps
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)


def run_pipeline(cfg, *, baseline: str | None = None) -> Path:
    """Run (or resume) Algorithm 1 or a baseline (`baseline`: a training.objective trained from M0, "sft",
    "neftune" or "undial"); return the final model checkpoint."""
    from megatron_wmss import budget
    from megatron_wmss.checkpoint import read_model_metadata
    from megatron_wmss.selection.run import run_selection
    from megatron_wmss.data import open_samples, training_rows
    from megatron_wmss.training.batches import ActiveSubset
    from megatron_wmss.training.loop import snapshot_dir

    run_dir = Path(cfg.run_dir)
    m0 = _prepare_m0(cfg, run_dir)
    meta = read_model_metadata(m0)
    hf_config, tokenizer_dir = meta["hf_config"], meta["tokenizer_dir"]
    samples = open_samples(cfg.data)  # scored and selected one by one
    dataset = training_rows(samples, cfg.data)  # trained on (packed rows when data.pack)
    w = cfg.wmss
    if baseline is not None:  # "sft" or a baseline objective ("neftune", "undial") at the same budget
        try:
            steps = budget.baseline_steps(cfg, len(dataset), _active_sizes(run_dir, w.iterations))
        except ValueError as err:
            raise SystemExit(f"wmss run --baseline {baseline}: {err}") from None
        _record_steps(run_dir, f"baseline_{baseline}", steps)
        phase = run_dir / f"baseline_{baseline}"
        exported = _train_phase(_phase_config(cfg, baseline, steps, phase, phase=0), dataset=dataset,
                                hf_config=hf_config, tokenizer_dir=tokenizer_dir, init={"model": str(m0)},
                                run_dir=phase, name=f"baseline {baseline} ({steps} steps)")
        return exported["model"]
    p1_steps, weak_at = budget.phase1_steps(cfg, len(dataset)), weak_step(w.weak)
    if weak_at is not None and weak_at >= p1_steps:
        raise SystemExit(f"wmss run: wmss.weak={w.weak} must name a step before the end of Phase 1 ({p1_steps} steps)")
    _record_steps(run_dir, "phase1_sft", p1_steps)
    phase = run_dir / "phase1_sft"
    m1 = _train_phase(_phase_config(cfg, "sft", p1_steps, phase, phase=0, export_steps=[weak_at] if weak_at else []),
                      dataset=dataset, hf_config=hf_config, tokenizer_dir=tokenizer_dir, init={"model": str(m0)},
                      run_dir=phase, name=f"phase 1 SFT ({p1_steps} steps)")["model"]
    first_weak = m0 if weak_at is None else snapshot_dir(phase, weak_at) / "model"
    models, wdjt = [first_weak, m1], []
    for t in range(1, w.iterations + 1):
        weak, strong = models[t - 1], models[t]
        select_dir = run_dir / f"iter_{t}" / "select"
        if not _done(select_dir):
            _log(f"iteration {t}: WD-DS with weak={weak} strong={strong}")
            summary = run_selection(cfg, dataset=samples, hf_config=hf_config, weak_ckpt=weak, strong_ckpt=strong,
                                    out_dir=select_dir, seed=cfg.training.seed + t)
            _log(f"iteration {t}: active set {summary['active_set_size']} of {summary['num_samples']} "
                 f"(selected fraction {summary['selected_fraction']:.3f}, weight CV {summary['weight_cv']:.3f})")
            _mark_done(select_dir)
        active = training_rows(ActiveSubset.from_file(samples, select_dir / "active_set.txt"), cfg.data)
        wdjt.append(budget.wdjt_steps(cfg, len(active)))
        _record_steps(run_dir, "wdjt", wdjt)
        phase = run_dir / f"iter_{t}" / "wdjt"
        exported = _train_phase(_phase_config(cfg, "wmss", wdjt[-1], phase, phase=t), dataset=active,
                                hf_config=hf_config, tokenizer_dir=tokenizer_dir,
                                init={"strong": str(strong), "weak": str(weak)}, run_dir=phase,
                                name=f"iteration {t} WD-JT ({wdjt[-1]} steps)")
        models.append(exported["strong"])
    _log(f"optimizer steps: Phase 1 {p1_steps} + WD-JT {' + '.join(map(str, wdjt))} = {p1_steps + sum(wdjt)}")
    return models[-1]


def release_accelerator_memory() -> None:
    """Give the GPU back before the evaluation subprocess starts vLLM on it: the training phases
    returned only paths, so collecting the cycles they left frees the models and optimizers, and
    emptying torch's cache returns their blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def finish(cfg, final_ckpt: Path, name: str) -> None:
    """Rank 0, after the process group is gone: export to HF, then evaluate if enabled."""
    run_dir = Path(cfg.run_dir)
    hf_dir = run_dir / f"{name}_hf"
    source = hf_dir / "SOURCE"  # which checkpoint the HF directory was exported from
    if not source.is_file() or source.read_text() != str(final_ckpt):
        _wmss_subprocess("convert", "megatron-to-hf", "--load", str(final_ckpt), "--out", str(hf_dir), "--overwrite")
        source.write_text(str(final_ckpt))
    print(f"[wmss run] final model: {hf_dir}", flush=True)
    if cfg.eval.enabled:
        _wmss_subprocess(*eval_command(cfg.eval, hf_dir, run_dir / "eval" / name, f"{cfg.data.path}.manifest.json"))


def eval_command(ev, hf_dir: Path, out_dir: Path, manifest: str) -> list[str]:
    """The `wmss eval` arguments for the `eval` section of a recipe (backend auto: vllm on GPU when
    installed, else transformers; max_new_tokens null: the paper's per-benchmark limits)."""
    backend = ev.backend
    if backend == "auto":
        has_vllm = importlib.util.find_spec("vllm") is not None  # not imported here: that is seconds of CUDA setup
        backend = "vllm" if torch.cuda.is_available() and has_vllm else "transformers"
    args = ["eval", "--model", str(hf_dir), "--output-dir", str(out_dir), "--manifest", manifest,
            "--benchmarks", ",".join(ev.benchmarks), "--backend", backend, "--n", str(ev.num_samples),
            "--temperature", str(ev.temperature), "--top-p", str(ev.top_p),
            "--k", ",".join(str(k) for k in ev.pass_at_k)]
    if backend == "transformers":
        args += ["--batch-size", str(ev.batch_size)] + (["--device", "cuda"] if torch.cuda.is_available() else [])
    if ev.grade_workers:
        args += ["--grade-workers", str(ev.grade_workers)]
    if ev.max_new_tokens:
        args += ["--max-new-tokens", str(ev.max_new_tokens)]
    if ev.limit:
        args += ["--limit", str(ev.limit)]
    return args
