"""Every tensor megatron_wmss hands to a torch.distributed collective is on the compute device.

A training step (WD-JT) and the WD-DS scoring pass run with the collectives checked by
tests/device_provenance.py, which emulates on CPU a compute device distinct from the default one
(on a GPU node a tensor built without `device=compute_device()` is a CPU tensor, and NCCL refuses it).
"""

from pathlib import Path

import torch

from megatron_wmss.testing import run_ranks
from tests.training_helpers import SEQ, TINY_QWEN3, ToySFTDataset, make_config


def checked_run_rank(workdir, tp):
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import save_model, write_model_metadata
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf
    from tests.device_provenance import track_collective_devices

    workdir = Path(workdir)
    distributed.initialize(tp=tp, seed=1)
    with track_collective_devices() as (violations, calls):
        tcfg, arch = transformer_config_from_hf(TINY_QWEN3, tp=tp, make_vocab_size_divisible_by=8)
        for name, seed in (("strong", 11), ("weak", 22)):
            torch.manual_seed(seed)
            save_model(build_gpt_model(tcfg, arch), workdir / name)
            write_model_metadata(workdir / name, TINY_QWEN3, None)

        from megatron_wmss.selection.run import build_scoring_pair
        from megatron_wmss.selection.scoring import score_dataset
        from megatron_wmss.training.loop import train

        cfg = make_config(workdir / "run", "wmss", tp=tp, **{"training.train_iters": 1})
        train(cfg, dataset=ToySFTDataset(), hf_config=TINY_QWEN3,
              init={"strong": str(workdir / "strong"), "weak": str(workdir / "weak")}, run_dir=workdir / "run")
        pair = build_scoring_pair(cfg, TINY_QWEN3, workdir / "weak", workdir / "strong")
        score_dataset(pair, ToySFTDataset(4), workdir / "scores", micro_batch_size=2, seq_length=SEQ,
                      progress=False)
    distributed.destroy()
    return violations, sorted(set(calls))


def test_every_collective_tensor_is_on_the_compute_device(tmp_path):
    # One process (TP=1) keeps the test fast; the vocab-parallel loss all-reduces (TP > 1) reduce
    # tensors computed from the hidden states, so they follow the model's device.
    (violations, calls), = run_ranks(checked_run_rank, 1, str(tmp_path), 1)
    assert not violations, "\n".join(sorted(set(violations)))
    # the check saw the sites it is meant to see (a wrapper that checked nothing would pass)
    for site in ("megatron_wmss.training.loop._reduce_logged", "megatron_wmss.training.loop._check_finite",
                 "megatron_wmss.selection.scoring.score_dataset"):
        assert site in calls, calls
