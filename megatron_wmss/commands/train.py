"""`wmss train`: SFT, WD-JT, DPO or ORPO training from a recipe (launch with torchrun for TP/PP/DP).

  torchrun --nproc_per_node=8 -m megatron_wmss.cli train --config examples/qwen3_4b_wmss.yaml \
      --init-strong ckpt/M1 --init-weak ckpt/M0 training.objective=wmss parallel.tp=2

Starting weights are model checkpoints (`wmss convert hf-to-megatron`, or a branch exported by an
earlier run); the architecture comes from their hf_config.json (else `model.hf_path`). Resumes from
`<run_dir>/checkpoints/latest` unless --no-resume. At the end each branch is exported to
`<run_dir>/export/{strong,weak}` (or `model` for SFT, DPO and ORPO). DPO and ORPO train on pair data
(`wmss preprocess --input-format pairs`, docs/w2s.md); DPO's frozen reference is --init-reference
(default: the --init-model checkpoint, the usual choice).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _parse(argv):
    parser = argparse.ArgumentParser(prog="wmss train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--init-model", help="SFT / DPO / ORPO: starting model checkpoint")
    parser.add_argument("--init-reference", help="DPO: frozen reference checkpoint (default: --init-model)")
    parser.add_argument("--init-strong", help="WD-JT: strong branch checkpoint (M_t)")
    parser.add_argument("--init-weak", help="WD-JT: weak branch checkpoint (M_{t-1})")
    parser.add_argument("--active-set", help="train only on the sample ids in this file (WD-DS output)")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in run_dir")
    parser.add_argument("--no-export", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import resolve_architecture
    from megatron_wmss.config import ConfigError, load_config
    from megatron_wmss.data import open_samples, training_rows
    from megatron_wmss.training.loop import train
    from megatron_wmss.training.train_module import train_module_for

    cfg = load_config(args.config, args.overrides)
    init = {branch: getattr(args, f"init_{branch}") for branch in train_module_for(cfg).init_branches}
    if "reference" in init and not init["reference"]:
        init["reference"] = init["model"]
    if len(init) > 1 and not all(init.values()):  # a pair starts from two checkpoints; one model may start random
        raise ConfigError(f"training.objective={cfg.training.objective} needs "
                          + " and ".join(f"--init-{branch}" for branch in init))
    hf_config, tokenizer_dir = resolve_architecture(init, cfg.model.hf_path)
    distributed.initialize(tp=cfg.parallel.tp, pp=cfg.parallel.pp, cp=cfg.parallel.cp, vpp=cfg.parallel.vpp,
                           seed=cfg.training.seed)
    pairs = cfg.training.objective in ("dpo", "orpo")
    dataset = open_samples(cfg.data)
    if pairs:
        from megatron_wmss.data.pairs import PairDataset

        dataset = PairDataset(training_rows(dataset, cfg.data))  # refuses packed rows (data.pack)
    if args.active_set:
        from megatron_wmss.training.batches import ActiveSubset

        dataset = ActiveSubset.from_file(dataset, args.active_set)
    if not pairs:
        dataset = training_rows(dataset, cfg.data)  # packed after the active-set view, so it packs too
    result = train(cfg, dataset=dataset, hf_config=hf_config, init=init,
                   run_dir=cfg.run_dir, resume=not args.no_resume, tokenizer_dir=tokenizer_dir)
    if not args.no_export:
        result.export(Path(cfg.run_dir) / "export", hf_config, tokenizer_dir)
    distributed.print_rank0(f"wmss train: done, {result.steps} steps, checkpoint {result.checkpoint}")
    distributed.destroy()
    return 0
