"""The multi-rank harness surfaces every failing rank's traceback and does not hang on a stuck rank."""

import time

import pytest

from megatron_wmss.testing import RankFailure, run_ranks


def _rank_and_world():
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), os.environ["MASTER_PORT"]


def _rank1_raises():
    import os

    if os.environ["RANK"] == "1":
        raise ValueError("boom on rank 1")
    return "ok"


def _rank0_hangs():
    import os

    if os.environ["RANK"] == "0":
        time.sleep(60)
    return "ok"


def test_results_in_rank_order():
    results = run_ranks(_rank_and_world, 2)
    assert [r[:2] for r in results] == [(0, 2), (1, 2)]


def test_failure_shows_traceback_of_the_rank():
    with pytest.raises(RankFailure, match=r"(?s)rank 1.*ValueError: boom on rank 1"):
        run_ranks(_rank1_raises, 2)


def test_timeout_names_the_stuck_rank():
    start = time.monotonic()
    with pytest.raises(RankFailure, match=r"ranks \[0\] did not finish"):
        run_ranks(_rank0_hangs, 2, timeout_s=8)
    assert time.monotonic() - start < 40
