"""`wmss diagnose` as a library: draw the samples, run each model forward-only over them under TP/PP/DP
through megatron's schedules (like WD-DS scoring, selection/scoring.py), reduce the final hidden states
to the logit statistics of statistics.py on the last stage, and write diagnose.json / diagnose.md.

diagnose.json: {"models": {NAME: {target_logit_mean, distractor_logit_mean, gap, logit_std, centered_norm,
max_logit, min_logit, l2_norm, entropy, max_prob, ... , "positions", "checkpoint"}}, "weak": NAME,
"strong": NAME, "entropy_separation": H_weak - H_strong (App. B.5) or null, "alpha", "lambda_cross"
(App. D, Eq. 16-17) or null, "samples": [sample ids], "seed": int}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_wmss.diagnostics.statistics import (
    StatisticsAccumulator,
    entropy_separation,
    lambda_cross,
    position_statistics,
)
from megatron_wmss.distributed import batch_to_device, compute_device
from megatron_wmss.losses import gather_hidden

DEFAULT_SAMPLES = 200  # App. B.4: 200 random training samples


def draw_samples(num_samples: int, count: int, seed: int) -> list[int]:
    """`count` distinct dataset indices drawn uniformly with `seed` (all of them when count >= num_samples),
    in dataset order."""
    if count >= num_samples:
        return list(range(num_samples))
    return sorted(np.random.default_rng(seed).choice(num_samples, size=count, replace=False).tolist())


def _statistics_forward_step(data_iterator, model):
    from megatron.core.utils import unwrap_model

    batch = batch_to_device(next(data_iterator))
    hidden = model(batch["tokens"], batch["position_ids"], attention_mask=None)

    def statistics(h):
        gpt = unwrap_model(model)
        h, _ = gather_hidden(h, gpt.config)
        mask = batch["loss_mask"].transpose(0, 1) > 0  # [s, b], labels already shifted (scoring.py)
        labels = batch["labels"].transpose(0, 1)
        stats = position_statistics(h[mask], gpt.output_weight(), labels[mask], vocab_size=gpt.unpadded_vocab_size)
        return torch.zeros(()), stats

    return hidden, statistics


def model_statistics(model, dataset, indices: list[int], *, micro_batch_size: int, seq_length: int) -> dict:
    """One model's statistics over the supervised positions of `dataset[indices]` (identical on every
    rank). DP ranks take every dp-th sample; a rank's last micro-batch is padded with rows whose
    supervised mask is zeroed, so no position counts twice."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss.distributed import current_layout

    layout = current_layout()
    mine = indices[layout.dp_rank::layout.dp]
    per_rank = -(-len(indices) // layout.dp)
    forward_backward = get_forward_backward_func()
    accumulator = StatisticsAccumulator(device=compute_device())
    model.eval()
    for start in range(0, per_rank, micro_batch_size):
        chosen = mine[start:start + micro_batch_size]
        rows = [dict(dataset[i]) for i in chosen]
        while len(rows) < micro_batch_size:  # padding rows: any sample, nothing supervised
            rows.append(dict(dataset[indices[0]]))
            rows[-1]["loss_mask"] = torch.zeros_like(rows[-1]["loss_mask"])
        batch = {k: torch.stack([r[k] for r in rows]) for k in ("tokens", "labels", "loss_mask", "position_ids")}
        with torch.no_grad():
            results = forward_backward(forward_step_func=_statistics_forward_step, data_iterator=iter([batch]),
                                       model=model, num_microbatches=1, seq_length=seq_length,
                                       micro_batch_size=micro_batch_size, forward_only=True)
        if layout.is_last_stage and layout.tp_rank == 0:  # TP ranks hold the same statistics
            accumulator.add(results[0])
    accumulator.all_reduce()  # other stages and TP ranks contribute zeros / EMPTY_MAX
    return accumulator.summary()


def build_model(cfg, hf_config: dict, checkpoint: str | Path):
    """One model at this rank's TP/PP layout, weights loaded, ending at its final hidden states."""
    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_recipe

    tcfg, arch = transformer_config_from_recipe(cfg, hf_config)
    model = build_gpt_model(tcfg, arch)
    load_model(model, checkpoint)
    model.return_hidden = True
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def diagnose(cfg, *, dataset, hf_config: dict, models: dict, weak: str | None, strong: str | None,
             num_samples: int = DEFAULT_SAMPLES, seed: int = 0) -> dict:
    """Statistics of every model in `models` (name -> model checkpoint), one after the other, plus the
    entropy separation and lambda_cross of the `weak` / `strong` pair when both are among them."""
    indices = draw_samples(len(dataset), num_samples, seed)
    result = {"models": {}, "weak": weak, "strong": strong, "entropy_separation": None, "alpha": None,
              "lambda_cross": None, "seed": seed, "samples": [dataset.sample_ids[i] for i in indices]}
    for name, checkpoint in models.items():
        model = build_model(cfg, hf_config, checkpoint)
        stats = model_statistics(model, dataset, indices, micro_batch_size=cfg.training.micro_batch_size,
                                 seq_length=cfg.data.seq_length)
        result["models"][name] = {**stats, "checkpoint": str(checkpoint)}
        del model
    found = result["models"]
    if weak in found and strong in found:
        result["entropy_separation"] = entropy_separation(found[weak]["entropy"], found[strong]["entropy"])
        result["alpha"], result["lambda_cross"] = lambda_cross(found[weak]["centered_norm"],
                                                               found[strong]["centered_norm"])
    return result


def write_diagnosis(result: dict, out_dir: str | Path) -> None:
    """diagnose.json and diagnose.md into `out_dir` (rank 0 only; atomically: json last)."""
    from megatron_wmss.diagnostics.report import markdown

    if dist.get_rank() != 0:
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "diagnose.md").write_text(markdown(result))
    tmp = out_dir / "diagnose.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out_dir / "diagnose.json")
