"""`wmss run`: the whole of Algorithm 1 from a recipe (launch with torchrun for TP/PP/DP).

  M0 --Phase 1 SFT (wmss.sft_epochs)--> M1
  for t = 1..K:  WD-DS(weak=M_(t-1), strong=M_t) -> D_active;  WD-JT on D_active -> M_(t+1) = strong branch
  export M_(K+1) to HF; evaluate when eval.enabled

Run directory (`run_dir`): config.yaml, M0/ (converted from model.hf_path), phase1_sft/, iter_<t>/select/,
iter_<t>/wdjt/, wmss_hf/, eval/wmss/ — each phase marks completion with a `DONE` file, so re-running the
same command resumes at the first incomplete phase (and inside it, from its last checkpoint or score
file). `--baseline sft` instead trains plain SFT for the same epoch budget (wmss.sft_epochs + K) into
`<run_dir>/baseline_sft/` (recipe in baseline_sft.config.yaml), then exports it to baseline_sft_hf/ and
evaluates it the same way. Both may run at once in one run_dir: M0 is converted once, under a file lock.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import gc
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import yaml


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


def _phase_config(cfg, objective: str, epochs: float, run_dir: Path):
    phase = copy.deepcopy(cfg)
    phase.training.objective = objective
    phase.training.epochs = epochs
    phase.run_dir = str(run_dir)
    return phase


def _log(message: str) -> None:
    if dist.get_rank() == 0:
        print(f"[wmss run] {message}", flush=True)


def _train_phase(cfg, *, dataset, hf_config, tokenizer_dir, init, run_dir: Path, name: str) -> dict:
    """Train one phase (resumable) and export its branches to <run_dir>/export/."""
    from megatron_wmss.training.export import export_branches
    from megatron_wmss.training.loop import train

    if not _done(run_dir):
        _log(f"{name}: training in {run_dir}")
        result = train(cfg, dataset=dataset, hf_config=hf_config, init=init, run_dir=run_dir, name=name)
        export_branches(result.model, run_dir / "export", hf_config, tokenizer_dir)
        _mark_done(run_dir)
    return {branch.name: branch for branch in (run_dir / "export").iterdir() if branch.is_dir()}


def _prepare_m0(cfg, run_dir: Path) -> Path:
    """M0 as a megatron model checkpoint, converted once from the HF directory model.hf_path."""
    m0 = run_dir / "M0"
    if not (m0 / "hf_config.json").is_file():
        if dist.get_rank() == 0:
            # The WMSS run and its baseline may share run_dir and start together: one converts, one waits.
            with open(run_dir / ".M0.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (m0 / "hf_config.json").is_file():
                    _log(f"converting {cfg.model.hf_path} -> {m0}")
                    _wmss_subprocess("convert", "hf-to-megatron", "--hf", cfg.model.hf_path, "--out", str(m0),
                                     "--tp", str(cfg.parallel.tp), "--pp", str(cfg.parallel.pp), "--overwrite")
        dist.barrier()
    return m0


def run_pipeline(cfg, *, baseline: str | None = None) -> Path:
    """Run (or resume) Algorithm 1 or the SFT baseline; return the final model checkpoint."""
    from megatron_wmss.checkpoint import read_model_metadata
    from megatron_wmss.selection.run import run_selection
    from megatron_wmss.train import open_dataset
    from megatron_wmss.training.batches import ActiveSubset

    run_dir = Path(cfg.run_dir)
    m0 = _prepare_m0(cfg, run_dir)
    meta = read_model_metadata(m0)
    hf_config, tokenizer_dir = meta["hf_config"], meta["tokenizer_dir"]
    dataset = open_dataset(cfg)
    w = cfg.wmss
    if baseline == "sft":
        epochs = w.sft_epochs + w.iterations
        phase = run_dir / "baseline_sft"
        exported = _train_phase(_phase_config(cfg, "sft", epochs, phase), dataset=dataset, hf_config=hf_config,
                                tokenizer_dir=tokenizer_dir, init={"model": str(m0)}, run_dir=phase,
                                name=f"baseline SFT ({epochs:g} epochs)")
        return exported["model"]
    phase = run_dir / "phase1_sft"
    models = [m0, _train_phase(_phase_config(cfg, "sft", w.sft_epochs, phase), dataset=dataset,
                               hf_config=hf_config, tokenizer_dir=tokenizer_dir, init={"model": str(m0)},
                               run_dir=phase, name="phase 1 SFT")["model"]]
    for t in range(1, w.iterations + 1):
        weak, strong = models[t - 1], models[t]
        select_dir = run_dir / f"iter_{t}" / "select"
        if not _done(select_dir):
            _log(f"iteration {t}: WD-DS with weak={weak} strong={strong}")
            summary = run_selection(cfg, dataset=dataset, hf_config=hf_config, weak_ckpt=weak, strong_ckpt=strong,
                                    out_dir=select_dir, seed=cfg.training.seed + t)
            _log(f"iteration {t}: active set {summary['active_set_size']} of {summary['num_samples']} "
                 f"(selected fraction {summary['selected_fraction']:.3f})")
            _mark_done(select_dir)
        active = ActiveSubset.from_file(dataset, select_dir / "active_set.txt")
        phase = run_dir / f"iter_{t}" / "wdjt"
        exported = _train_phase(_phase_config(cfg, "wmss", 1.0, phase), dataset=active, hf_config=hf_config,
                                tokenizer_dir=tokenizer_dir, init={"strong": str(strong), "weak": str(weak)},
                                run_dir=phase, name=f"iteration {t} WD-JT")
        models.append(exported["strong"])
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
    if backend == "transformers" and torch.cuda.is_available():
        args += ["--device", "cuda"]
    if ev.max_new_tokens:
        args += ["--max-new-tokens", str(ev.max_new_tokens)]
    if ev.limit:
        args += ["--limit", str(ev.limit)]
    return args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wmss run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--baseline", choices=["sft"], help="run the equal-budget SFT baseline instead")
    args = parser.parse_args(argv)

    from megatron_wmss import distributed
    from megatron_wmss.config import ConfigError, load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    if not cfg.model.hf_path or not cfg.data.path:
        raise SystemExit("wmss run: model.hf_path (HF directory of M0) and data.path are required")
    if cfg.data.pack:  # WD-DS scores one sample per row; a packed row holds several
        raise ConfigError("data.pack: wmss run needs unpacked rows (WD-DS scores and selects single samples); "
                          "use data.pack=false")
    distributed.initialize(tp=cfg.parallel.tp, pp=cfg.parallel.pp, cp=cfg.parallel.cp, seed=cfg.training.seed)
    if dist.get_rank() == 0:
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        record = "baseline_sft.config.yaml" if args.baseline else "config.yaml"  # both may share run_dir
        (Path(cfg.run_dir) / record).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    final = run_pipeline(cfg, baseline=args.baseline)
    rank = dist.get_rank()
    distributed.destroy()
    release_accelerator_memory()
    if rank == 0:
        finish(cfg, final, "baseline_sft" if args.baseline else "wmss")
    return 0
