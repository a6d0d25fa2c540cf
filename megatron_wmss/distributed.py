"""torchrun environment -> torch.distributed (nccl with CUDA, gloo without) -> megatron parallel_state.

Works under `torchrun --nproc_per_node=N` and in a single plain `python` process (world size 1).
"""

from __future__ import annotations

import datetime
import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from megatron_wmss.compat import cpu as cpu_compat
from megatron_wmss.errors import ConfigError


@dataclass(frozen=True)
class ParallelLayout:
    """The parallel degrees of this job and this process's coordinates in them."""

    tp: int
    pp: int
    cp: int
    dp: int
    rank: int
    world_size: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    backend: str

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _single_process_store() -> dist.Store | None:
    """A plain `python` run has no torchrun variables: act as rank 0 of a world of 1.

    Its rendezvous is an in-process HashStore rather than a TCP port: a port picked free and bound a
    moment later can be taken in between by another process on a busy machine (EADDRINUSE)."""
    if "MASTER_ADDR" in os.environ or os.environ.get("WORLD_SIZE", "1") != "1":
        return None  # launched by torchrun (or the test harness): env:// rendezvous
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    return dist.HashStore()


def compute_device() -> torch.device:
    """The device this process computes on: cuda:LOCAL_RANK when CUDA is available, else cpu.

    Every tensor handed to a torch.distributed collective must be created on it (`device=compute_device()`
    or `.to(compute_device())`): with NCCL torch maps the default group to CUDA only, so a tensor built
    without a device (a CPU tensor) makes the collective fail on a GPU node, while on CPU nothing shows.
    tests/test_collective_devices.py checks every call site of the package."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def batch_to_device(batch: dict) -> dict:
    """A micro-batch dict with its tensors moved to `compute_device()` (other values as they are)."""
    return {k: v.to(compute_device(), non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def check_layout(world_size: int, tp: int, pp: int, cp: int = 1) -> int:
    """Return the data-parallel size, or raise ConfigError naming the option that does not fit."""
    for name, value in (("parallel.tp", tp), ("parallel.pp", pp), ("parallel.cp", cp)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    model_parallel = tp * pp * cp
    if world_size % model_parallel:
        raise ConfigError(
            f"world size {world_size} is not divisible by parallel.tp*parallel.pp*parallel.cp = "
            f"{tp}*{pp}*{cp} = {model_parallel}")
    return world_size // model_parallel


def initialize(tp: int = 1, pp: int = 1, cp: int = 1, vpp: int | None = None, seed: int = 1234,
               timeout_s: int = 600) -> ParallelLayout:
    """Initialize torch.distributed and megatron parallel_state; seed every RNG.

    The seed follows Megatron-LM: `seed + 100 * pp_rank` for python/numpy/torch and megatron's
    model-parallel RNG tracker (which itself offsets by TP rank for TP-split dropout).
    """
    from megatron.core import parallel_state, tensor_parallel

    cpu_compat.apply()
    store = _single_process_store()
    world_size = int(os.environ["WORLD_SIZE"])
    check_layout(world_size, tp, pp, cp)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(compute_device())
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=store, rank=0, world_size=1, timeout=timeout)
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        context_parallel_size=cp, virtual_pipeline_model_parallel_size=vpp)
    layout = current_layout()
    stage_seed = seed + 100 * layout.pp_rank
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)
    return layout


def current_layout() -> ParallelLayout:
    """The layout of the already initialized job."""
    from megatron.core import parallel_state as ps

    return ParallelLayout(
        tp=ps.get_tensor_model_parallel_world_size(), pp=ps.get_pipeline_model_parallel_world_size(),
        cp=ps.get_context_parallel_world_size(), dp=ps.get_data_parallel_world_size(),
        rank=dist.get_rank(), world_size=dist.get_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(), pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(), backend=dist.get_backend())


def destroy() -> None:
    """Tear down megatron parallel_state and the process group (safe to call twice)."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def print_rank0(*args, **kwargs) -> None:
    if is_rank0():
        print(*args, **kwargs, flush=True)
