"""The training loop of every train module (train_module.py): megatron schedules, optimizer and
scheduler, logging, checkpoints every N steps and at the end, exact resume, NaN/Inf stop, snapshots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core.utils import unwrap_model

from megatron_wmss.distributed import compute_device


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN/Inf; nothing was saved from this step."""


@dataclass
class TrainResult:
    steps: int
    checkpoint: Path
    metrics: dict  # the last step's metrics (on the logging rank; empty elsewhere)
    model: object  # the trained DDP-wrapped model
    train_module: object

    def export(self, out_root: str | Path, hf_config: dict, tokenizer_dir: str | Path | None) -> dict:
        """Each trained branch as a model checkpoint under `out_root` (export.py)."""
        from megatron_wmss.training.export import export_branches

        return export_branches(self.train_module.branches(unwrap_model(self.model)), out_root, hf_config,
                               tokenizer_dir)


def _reduce_logged(losses: list[dict], dp_group, count_name: str = "supervised_tokens") -> dict:
    """Means over the global batch (per token, or per pair) of each logged quantity (last stage only)."""
    out = {}
    for key in losses[0]:
        total = torch.stack([item[key] for item in losses]).sum(dim=0).double()
        dist.all_reduce(total, group=dp_group)
        out[key] = (total[0] / total[1].clamp_min(1)).item()
        if key == "loss":
            out[count_name] = total[1].item()
    return out


def _check_finite(step: int, metrics: dict, model) -> None:
    """Stop on a NaN/Inf loss or gradient anywhere, before the optimizer can apply it."""
    bad_loss = any(not math.isfinite(v) for v in metrics.values())
    bad_grad = any(not torch.isfinite(p.main_grad).all() for p in model.parameters()
                   if p.requires_grad and getattr(p, "main_grad", None) is not None)
    flags = torch.tensor([float(bad_loss), float(bad_grad)], device=compute_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if flags.any():
        what = " and ".join(n for n, f in zip(("loss", "gradient"), flags.tolist()) if f)
        raise NonFiniteError(f"step {step}: non-finite {what} (metrics on this rank: {metrics}); stopping "
                             "before the optimizer update, no checkpoint written for this step")


def snapshot_dir(run_dir: str | Path, step: int) -> Path:
    """Where `training.export_steps` puts the model(s) after `step`: one directory per branch inside."""
    return Path(run_dir) / "snapshots" / f"step_{step:07d}"


def train(cfg, *, dataset, hf_config: dict, init: dict, run_dir: str | Path, resume: bool = True,
          name: str = "train", tokenizer_dir: str | Path | None = None) -> TrainResult:
    """Train the train module of `cfg.training.objective` on `dataset` (an SFTDataset); checkpoints go
    to `<run_dir>/checkpoints`. `init` maps the module's branches to starting model checkpoints. After
    each step in `training.export_steps` the branches are exported to `snapshot_dir(run_dir, step)`."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss.distributed import current_layout
    from megatron_wmss.training.batches import GlobalBatchSchedule
    from megatron_wmss.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
    from megatron_wmss.training.components import build_components
    from megatron_wmss.training.logger import TrainingLogger
    from megatron_wmss.training.train_module import train_module_for

    t, run_dir = cfg.training, Path(run_dir)
    layout = current_layout()
    schedule = GlobalBatchSchedule(dataset, global_batch_size=t.global_batch_size,
                                   micro_batch_size=t.micro_batch_size, dp_size=layout.dp, dp_rank=layout.dp_rank,
                                   epochs=t.epochs, train_iters=t.train_iters, phase=t.data_phase,
                                   pad_to_longest=cfg.data.pad_to == "longest",
                                   length_multiple=cfg.parallel.tp if cfg.parallel.sequence_parallel else 1)
    train_module = train_module_for(cfg)
    parts = build_components(cfg, train_module, hf_config, init, schedule.total_steps)
    distributed_optimizer = cfg.parallel.use_distributed_optimizer
    ckpt_root = run_dir / "checkpoints"
    start_step, latest = 0, latest_checkpoint(ckpt_root) if resume else None
    if latest is not None:
        start_step = load_checkpoint(latest, parts.model, parts.optimizer, parts.scheduler,
                                     distributed_optimizer=distributed_optimizer)["step"]
    is_logger = layout.is_last_stage and layout.tp_rank == 0 and layout.dp_rank == 0
    logger = TrainingLogger(run_dir, total_steps=schedule.total_steps, start_step=start_step,
                            log_interval=t.log_interval, tensorboard=t.tensorboard, enabled=is_logger, name=name)
    if is_logger and latest is not None:
        print(f"[{name}] resumed from {latest} at step {start_step}", flush=True)
    forward_backward = get_forward_backward_func()
    dp_group = parallel_state.get_data_parallel_group()
    metrics: dict = {}
    trainer_state = {"objective": t.objective, "total_steps": schedule.total_steps}
    try:
        for step in range(start_step, schedule.total_steps):
            train_module.begin_step(step)
            parts.model.zero_grad_buffer()
            parts.optimizer.zero_grad()
            losses = forward_backward(
                forward_step_func=train_module.forward_step, data_iterator=iter(schedule.micro_batches(step)), model=parts.model,
                num_microbatches=schedule.num_microbatches, seq_length=cfg.data.seq_length,
                micro_batch_size=t.micro_batch_size * train_module.sequences_per_sample, forward_only=False)
            metrics = _reduce_logged(losses, dp_group, train_module.count_name) if layout.is_last_stage else {}
            _check_finite(step + 1, metrics, parts.model)
            _, grad_norm, _ = parts.optimizer.step()
            metrics.update(lr=parts.optimizer.param_groups[0]["lr"], grad_norm=float(grad_norm or 0.0))
            parts.scheduler.step(increment=1)
            logger.log(step + 1, metrics)
            if step + 1 in t.export_steps and step + 1 > start_step:  # earlier ones preceded the checkpoint
                TrainResult(step + 1, latest, metrics, parts.model, train_module).export(
                    snapshot_dir(run_dir, step + 1), hf_config, tokenizer_dir)
            last = step + 1 == schedule.total_steps
            if last or (t.save_interval and (step + 1) % t.save_interval == 0):
                latest = save_checkpoint(ckpt_root, step + 1, parts.model, parts.optimizer, parts.scheduler,
                                         distributed_optimizer=distributed_optimizer, trainer_state=trainer_state,
                                         keep_last=t.keep_last)
    finally:
        logger.close()
    return TrainResult(steps=schedule.total_steps, checkpoint=latest, metrics=metrics, model=parts.model,
                       train_module=train_module)
