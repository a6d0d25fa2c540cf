"""One WD-DS round: load M_{t-1} (weak) and M_t (strong), score the data, draw and write the active set."""

from __future__ import annotations

import json
from pathlib import Path


def build_scoring_pair(cfg, hf_config: dict, weak_ckpt: str | Path, strong_ckpt: str | Path):
    """Both models at this rank's TP/PP layout, weights loaded, no DDP and no optimizer state."""
    from megatron_wmss.models.build import transformer_config_from_recipe
    from megatron_wmss.training.train_module import build_pair

    tcfg, arch = transformer_config_from_recipe(cfg, hf_config)
    pair, _ = build_pair(tcfg, arch, strong_ckpt, weak_ckpt, freeze_weak=True)
    for param in pair.parameters():
        param.requires_grad_(False)
    return pair


def run_selection(cfg, *, dataset, hf_config: dict, weak_ckpt, strong_ckpt, out_dir, seed: int) -> dict:
    """Score `dataset`'s samples (resumable; one sample per item, packed into rows for scoring when
    data.pack), then on rank 0 write active_set.txt / summary.json / entropy_hist.png.
    Returns the summary (on every rank). Skips everything if `out_dir/active_set.txt` exists."""
    import torch.distributed as dist

    from megatron_wmss.selection.scoring import read_scores, score_dataset
    from megatron_wmss.selection.summary import select_active_set, write_selection

    out_dir = Path(out_dir)
    if (out_dir / "active_set.txt").is_file() and (out_dir / "summary.json").is_file():
        return json.loads((out_dir / "summary.json").read_text())
    pair = build_scoring_pair(cfg, hf_config, weak_ckpt, strong_ckpt)
    score_dataset(pair, dataset, out_dir, micro_batch_size=cfg.training.micro_batch_size,
                  seq_length=cfg.data.seq_length, pack=cfg.data.pack, seed=cfg.data.seed)
    if dist.get_rank() == 0:
        selection = select_active_set(read_scores(out_dir), dataset.sample_ids, cfg.wmss, seed)
        write_selection(out_dir, selection)
        for warning in selection["summary"]["warnings"]:
            print(f"WARNING (WD-DS): {warning}", flush=True)
    dist.barrier()
    return json.loads((out_dir / "summary.json").read_text())
