"""A diverging run stops with a message naming the step, before the optimizer applies the bad update,
and the last checkpoint it left holds finite weights; bad batch settings are named."""

import json

import pytest
import torch

from megatron_wmss.testing import RankFailure, run_ranks
from tests.training_helpers import TINY_QWEN3, ToySFTDataset, init_checkpoints_rank, make_config, sequence_rank


class PoisonedDataset(ToySFTDataset):
    """The first sample of step 3 (stream position 8 with global batch 4) carries a NaN in its loss mask."""

    def __init__(self):
        super().__init__()
        self.rows[int(self.epoch_order(0)[8])]["loss_mask"][-1] = float("nan")


def diverging_rank(workdir):
    from megatron_wmss import distributed
    from megatron_wmss.training.loop import train

    cfg = make_config(f"{workdir}/run", "wmss", **{"training.save_interval": 1, "training.train_iters": 5})
    distributed.initialize(seed=cfg.training.seed)
    train(cfg, dataset=PoisonedDataset(), hf_config=TINY_QWEN3,
          init={"strong": f"{workdir}/strong", "weak": f"{workdir}/weak"}, run_dir=f"{workdir}/run")


def checkpoint_finite_rank(step_dir):
    from megatron.core import dist_checkpointing

    from megatron_wmss import distributed

    distributed.initialize()
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf
    from megatron_wmss.models.pair import WeakStrongPair

    tcfg, arch = transformer_config_from_hf(TINY_QWEN3, make_vocab_size_divisible_by=8)
    pair = WeakStrongPair(build_gpt_model(tcfg, arch), build_gpt_model(tcfg, arch))
    loaded = dist_checkpointing.load({"model": pair.sharded_state_dict()}, step_dir)
    return all(torch.isfinite(t).all().item() for t in loaded["model"].values() if torch.is_tensor(t))


def test_non_finite_loss_stops_with_the_step(tmp_path):
    with pytest.raises(RankFailure, match=r"NonFiniteError: step 3: non-finite loss"):
        run_ranks(sequence_rank, 1, (init_checkpoints_rank, str(tmp_path)), (diverging_rank, str(tmp_path)))
    step = 3
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{step - 1:07d}", "the last checkpoint must be the step before the failure"
    assert json.loads((tmp_path / "run" / "checkpoints" / latest / "trainer_state.json").read_text())["step"] == step - 1
    assert run_ranks(checkpoint_finite_rank, 1, str(tmp_path / "run" / "checkpoints" / latest))[0]


def test_global_batch_must_split_into_micro_batches():
    from megatron_wmss.training.batches import GlobalBatchSchedule

    with pytest.raises(ValueError, match="training.global_batch_size=6 must be a multiple of"):
        GlobalBatchSchedule(ToySFTDataset(), global_batch_size=6, micro_batch_size=4, dp_size=1, dp_rank=0)
