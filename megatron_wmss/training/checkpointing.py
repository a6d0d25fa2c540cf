"""Training checkpoints: model(s), optimizer, LR scheduler, RNG states and data position.

Layout under `<run_dir>/checkpoints/`:
  step_0000010/          megatron dist checkpoint {"model", "optimizer"} + trainer_state.json +
                         rng/rank<r>.pt (one per rank)
  latest                 text: the name of the newest COMPLETE step directory

A save writes `step_N.tmp/`, renames it to `step_N/` only after every rank has finished writing, and
then replaces `latest` atomically (write + os.replace). A kill at any moment leaves `latest` naming a
complete checkpoint; stray `.tmp` directories are removed on the next save. Only then are the older
step directories beyond `keep_last` deleted (training.keep_last; 0 keeps every one).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron.core.utils import unwrap_model

from megatron_wmss.checkpoint import load_sharded_strict

_SHARDING = {"distrib_optim_sharding_type": "dp_reshardable"}  # the format that works on CPU too


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _rng_state() -> dict:
    from megatron.core import tensor_parallel

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}


def _set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _sharded_state(model, optimizer, distributed_optimizer: bool, loading: bool) -> dict:
    model_state = unwrap_model(model).sharded_state_dict()
    if loading and distributed_optimizer:
        # The torch AdamW fallback asserts every param has a 'step' in DistributedOptimizer.state_dict;
        # materialize the state before building the sharded template.
        for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
            opt._init_optimizer_states_with_dummy_values()
    metadata = _SHARDING if distributed_optimizer else None
    return {"model": model_state,
            "optimizer": optimizer.sharded_state_dict(model_state, is_loading=loading, metadata=metadata)}


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    step_dir = Path(root) / pointer.read_text().strip()
    if not (step_dir / "trainer_state.json").is_file():
        raise RuntimeError(f"{pointer} names {step_dir}, which is not a complete checkpoint")
    return step_dir


def _prune(root: Path, newest: Path, keep_last: int) -> None:
    """Delete the step directories older than the `keep_last` newest; `newest` (the one `latest` names)
    is always kept, even when an earlier run left a higher step number behind."""
    if keep_last < 1:
        return
    others = sorted((d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"step_\d+", d.name) and d != newest),
                    key=lambda d: int(d.name[len("step_"):]))
    for old in others[:max(len(others) - (keep_last - 1), 0)]:
        shutil.rmtree(old)


def save_checkpoint(root: str | Path, step: int, model, optimizer, scheduler, *,
                    distributed_optimizer: bool, trainer_state: dict, keep_last: int = 0) -> Path:
    """Collective save of everything needed to resume at `step`, then (rank 0) deletion of the step
    directories beyond the `keep_last` newest (see module docstring)."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    final = root / f"step_{step:07d}"
    tmp = root / f"step_{step:07d}.tmp"
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):
            shutil.rmtree(stale)
        if final.exists():
            shutil.rmtree(final)
        tmp.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(_sharded_state(model, optimizer, distributed_optimizer, loading=False), str(tmp))
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(_rng_state(), tmp / "rng" / f"rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        state = dict(trainer_state, step=step, scheduler=scheduler.state_dict())
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        os.replace(tmp, final)
        pointer_tmp = root / "latest.tmp"
        pointer_tmp.write_text(final.name)
        os.replace(pointer_tmp, root / "latest")
    _barrier()
    if _rank() == 0:  # only now does `latest` name the new, complete checkpoint
        _prune(root, final, keep_last)
    return final


def load_checkpoint(step_dir: str | Path, model, optimizer, scheduler, *, distributed_optimizer: bool) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG from `step_dir`; return trainer_state."""
    step_dir = Path(step_dir)
    state = json.loads((step_dir / "trainer_state.json").read_text())
    loaded = load_sharded_strict(_sharded_state(model, optimizer, distributed_optimizer, loading=True), step_dir)
    unwrap_model(model).load_state_dict(loaded["model"], strict=True)
    with torch.no_grad():  # fp32 main params are views of the model params
        optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = step_dir / "rng" / f"rank{_rank()}.pt"
    if rng_file.is_file():  # absent when resumed with a different world size
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return state
