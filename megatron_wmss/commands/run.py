"""`wmss run`: the whole of Algorithm 1 from a recipe (launch with torchrun for TP/PP/DP).

  M0 --Phase 1 SFT (wmss.sft_steps, default wmss.sft_epochs of D)--> M1
  for t = 1..K:  WD-DS(weak=M_(t-1), strong=M_t) -> D_active;  WD-JT on D_active (wmss.wdjt_steps, default
                 1 epoch of D_active) -> M_(t+1) = strong branch   (wmss.weak=phase1_step:N: the first weak
                 model is the Phase-1 checkpoint after N steps instead of M0)
  export M_(K+1) to HF; evaluate when eval.enabled

Budgets are optimizer steps (megatron_wmss/budget.py), recorded in `<run_dir>/steps.json`; every phase
draws its own data order (training.data_phase), so no phase replays another one's.

Run directory (`run_dir`): config.yaml, M0/ (converted from model.hf_path), phase1_sft/, iter_<t>/select/,
iter_<t>/wdjt/, wmss_hf/, eval/wmss/ — each phase marks completion with a `DONE` file, so re-running the
same command resumes at the first incomplete phase (and inside it, from its last checkpoint or score
file). `--baseline sft` instead trains plain SFT from M0 (wmss.baseline_steps; with wmss.step_matched the
Phase-1 + WD-JT steps of the WMSS run; default the epoch rule wmss.sft_epochs + K epochs of D) into
`<run_dir>/baseline_sft/` (recipe in baseline_sft.config.yaml), then exports it to baseline_sft_hf/ and
evaluates it the same way. `--baseline neftune` / `--baseline undial` train the paper's other baselines
(App. E.6; recipe sections `neftune` / `undial`) from M0 at the same budget, into baseline_<name>/. Both may run at once in one run_dir: M0 is converted once, under a file lock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist
import yaml

from megatron_wmss.pipeline import finish, release_accelerator_memory, run_pipeline


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wmss run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--baseline", choices=["sft", "neftune", "undial"],
                        help="run this baseline from M0 instead (budget: wmss.baseline_steps / wmss.step_matched)")
    args = parser.parse_args(argv)

    from megatron_wmss import distributed
    from megatron_wmss.config import ConfigError, load_config, to_dict

    cfg = load_config(args.config, args.overrides)
    if not cfg.model.hf_path or not cfg.data.path:
        raise ConfigError("model.hf_path (HF directory of M0) and data.path are required")
    hf = Path(cfg.model.hf_path)
    if not (hf.is_dir() or (hf.suffix == ".gguf" and hf.is_file()) or cfg.model.hf_path == "smollm2"):
        raise ConfigError(f"model.hf_path: {hf} is not a directory (the HF model M0 to start from; a .gguf file "
                          "or 'smollm2' also works, docs/convert.md)")
    if cfg.training.train_iters is not None or cfg.training.epochs != 1.0:
        raise ConfigError("training.train_iters / training.epochs: wmss run sets every phase's length itself; use "
                          "wmss.sft_steps, wmss.wdjt_steps, wmss.baseline_steps (or wmss.sft_epochs)")
    distributed.initialize(tp=cfg.parallel.tp, pp=cfg.parallel.pp, cp=cfg.parallel.cp, seed=cfg.training.seed)
    if dist.get_rank() == 0:
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        record = f"baseline_{args.baseline}.config.yaml" if args.baseline else "config.yaml"  # all may share run_dir
        (Path(cfg.run_dir) / record).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    final = run_pipeline(cfg, baseline=args.baseline)
    rank = dist.get_rank()
    distributed.destroy()
    release_accelerator_memory()
    if rank == 0:
        finish(cfg, final, f"baseline_{args.baseline}" if args.baseline else "wmss")
    return 0
