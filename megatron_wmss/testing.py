"""Run a function on N real gloo ranks (one process each) and collect what each rank returns.

Used by the tests to compare TP/PP/DP runs against a single process. `fn` must be importable by
module path (a module-level function) because ranks are started with the 'spawn' method.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Any, Callable

from megatron_wmss.distributed import free_port


class RankFailure(RuntimeError):
    """One or more ranks raised, crashed or timed out; the message holds every rank's traceback."""


def _rank_main(fn, args, kwargs, rank, world_size, port, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    try:
        value = fn(*args, **kwargs)
        # Serialized to bytes: tensors sent as-is would travel as shared-memory handles that die
        # with this process.
        buffer = io.BytesIO()
        torch.save(value, buffer)
        results.put((rank, True, buffer.getvalue()))
    except BaseException:  # surfaced to the parent with the rank's traceback
        results.put((rank, False, traceback.format_exc()))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():  # a test that did not tear down still must not leak the group
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()
            dist.destroy_process_group()


_PORT_ATTEMPTS = 3


def run_ranks(fn: Callable[..., Any], world_size: int, *args, timeout_s: float = 240, **kwargs) -> list[Any]:
    """Start `world_size` processes running `fn(*args, **kwargs)` with torchrun-style environment
    variables on a free port; return the list of their return values by rank.

    Raises RankFailure with the traceback of every failing rank, or naming the ranks still running at
    `timeout_s` (they are killed). A port taken by another process between being picked and rank 0
    binding it (EADDRINUSE) is retried on a new port, up to `_PORT_ATTEMPTS` launches."""
    for _ in range(_PORT_ATTEMPTS - 1):
        try:
            return _launch(fn, world_size, args, kwargs, timeout_s)
        except RankFailure as failure:
            if "EADDRINUSE" not in str(failure):
                raise
    return _launch(fn, world_size, args, kwargs, timeout_s)


def _launch(fn, world_size, args, kwargs, timeout_s) -> list[Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, args, kwargs, r, world_size, port, results), daemon=False)  # dist_checkpointing starts a Manager child
             for r in range(world_size)]
    for proc in procs:
        proc.start()
    collected: dict[int, tuple[bool, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(collected) < world_size and time.monotonic() < deadline:
        try:
            rank, ok, value = results.get(timeout=0.5)
            collected[rank] = (ok, value)
            if not ok:  # give the other ranks a moment to report, then stop waiting on a hung collective
                deadline = min(deadline, time.monotonic() + 10)
        except queue.Empty:
            dead = [r for r, p in enumerate(procs) if not p.is_alive() and p.exitcode not in (0, None)
                    and r not in collected]
            if dead:
                for r in dead:
                    collected[r] = (False, f"rank {r} died with exit code {procs[r].exitcode}")
                deadline = min(deadline, time.monotonic() + 10)
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    failures = [f"--- rank {r} ---\n{v}" for r, (ok, v) in sorted(collected.items()) if not ok]
    missing = [r for r in range(world_size) if r not in collected]
    if failures or missing:
        msg = "\n".join(failures)
        if missing:
            msg += f"\nranks {missing} did not finish within {timeout_s:.0f}s (killed)"
        raise RankFailure(msg)
    import torch

    return [torch.load(io.BytesIO(collected[r][1]), weights_only=False) for r in range(world_size)]
