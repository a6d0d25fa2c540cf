"""Step metrics to the console, TensorBoard, `metrics.jsonl` and (interactive) a progress bar.

Only the rank that holds the loss (the last pipeline stage, tensor and data rank 0) writes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingLogger:
    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int, log_interval: int,
                 tensorboard: bool, enabled: bool, name: str = "train"):
        self.enabled = enabled
        self.total_steps, self.start_step, self.log_interval = total_steps, start_step, log_interval
        self.name = name
        self.started = time.monotonic()
        self.tokens_since_start = 0.0
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.writer = self.bar = None
        if not enabled:
            return
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=name, dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop metrics of steps after the checkpoint (they are trained again)."""
        if not self.metrics_path.is_file():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict) -> None:
        """`step` is 1-based (the number of completed optimizer steps)."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        self.tokens_since_start += metrics.get("supervised_tokens", 0.0)
        done = step - self.start_step
        eta = elapsed / done * (self.total_steps - step) if done else 0.0
        record = dict(step=step, **metrics, tokens_per_s=self.tokens_since_start / max(elapsed, 1e-9),
                      elapsed_s=elapsed)
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{self.name}/{key}", value, step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if step % self.log_interval == 0 or step == self.total_steps:
            shown = ("strong_ce", "weak_ce", "reward_margin", "reward_accuracy")
            extra = "".join(f" | {k} {metrics[k]:.4f}" for k in shown if k in metrics)
            line = (f"[{self.name}] step {step}/{self.total_steps} | loss {metrics['loss']:.6f}{extra} | "
                    f"lr {metrics['lr']:.3e} | grad_norm {metrics['grad_norm']:.4f} | "
                    f"tok/s {record['tokens_per_s']:.1f} | elapsed {_fmt_duration(elapsed)} | "
                    f"eta {_fmt_duration(eta)}")
            (self.bar.write if self.bar is not None else print)(line)
            sys.stdout.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
