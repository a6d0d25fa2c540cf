"""`wmss select`: the WD-DS scoring pass and active-set draw for one iteration (launch with torchrun).

  torchrun --nproc_per_node=8 -m megatron_wmss.cli select --config RECIPE.yaml \
      --weak ckpt/M0 --strong ckpt/M1 --out runs/x/select_1

Writes <out>/scores/rank*.jsonl (incremental; an interrupted pass resumes), active_set.txt,
summary.json and entropy_hist.png. With data.pack=true the samples are scored packed into rows, with one
score per sample as unpacked (selection/scoring.py).
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wmss select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe")
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--weak", required=True, help="model checkpoint of M_(t-1)")
    parser.add_argument("--strong", required=True, help="model checkpoint of M_t")
    parser.add_argument("--out", required=True, help="selection directory")
    parser.add_argument("--seed", type=int, default=None, help="draw seed (default: training.seed)")
    args = parser.parse_args(argv)

    from megatron_wmss import distributed
    from megatron_wmss.config import load_config
    from megatron_wmss.selection.run import run_selection
    from megatron_wmss.checkpoint import resolve_architecture
    from megatron_wmss.data import open_samples

    cfg = load_config(args.config, args.overrides)
    hf_config, _ = resolve_architecture({"strong": args.strong}, cfg.model.hf_path)
    distributed.initialize(tp=cfg.parallel.tp, pp=cfg.parallel.pp, cp=cfg.parallel.cp, seed=cfg.training.seed)
    summary = run_selection(cfg, dataset=open_samples(cfg.data), hf_config=hf_config, weak_ckpt=args.weak,
                            strong_ckpt=args.strong, out_dir=args.out,
                            seed=cfg.training.seed if args.seed is None else args.seed)
    distributed.print_rank0(json.dumps({k: summary[k] for k in (
        "num_samples", "active_set_size", "selected_fraction", "separation", "weight_cv", "weight_min",
        "weight_max", "ess_fraction")}))
    distributed.destroy()
    return 0
