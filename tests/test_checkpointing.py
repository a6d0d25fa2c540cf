"""Checkpoints: strict loading names the mismatched keys; a save that dies midway leaves `latest` on a
complete checkpoint and the run resumes from it; `training.keep_last` prunes only after a complete save."""

import json
from pathlib import Path

import pytest

from megatron_wmss.testing import run_ranks
from tests.training_helpers import TINY_QWEN3, ToySFTDataset, init_checkpoints_rank, make_config, sequence_rank


def mismatch_rank(workdir):
    """Messages of loading a tied-embedding checkpoint into an untied model and the reverse."""
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import CheckpointMismatchError, load_model, save_model
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize(seed=1)
    models = {}
    for tied in (True, False):
        tcfg, arch = transformer_config_from_hf(dict(TINY_QWEN3, tie_word_embeddings=tied),
                                                make_vocab_size_divisible_by=8)
        models[tied] = build_gpt_model(tcfg, arch)
        save_model(models[tied], Path(workdir) / f"tied_{tied}")
    load_model(models[True], Path(workdir) / "tied_True")  # a matching checkpoint loads
    messages = {}
    for target, source in ((False, True), (True, False)):
        try:
            load_model(models[target], Path(workdir) / f"tied_{source}")
        except CheckpointMismatchError as err:
            messages[f"tied_{source} into tied_{target}"] = str(err)
    distributed.destroy()
    return messages


def test_a_checkpoint_with_a_missing_or_extra_key_is_refused_by_name(tmp_path):
    messages = run_ranks(mismatch_rank, 1, str(tmp_path))[0]
    missing = messages["tied_True into tied_False"]
    assert "missing from the checkpoint: output_layer.weight" in missing
    extra = messages["tied_False into tied_True"]
    assert "unexpected in the checkpoint (the model has no such weight): output_layer.weight" in extra


class InjectedKill(RuntimeError):
    pass


def interrupted_rank(workdir):
    """Train 4 steps saving every step (keep_last=2), die inside the step-5 save (after the dist
    checkpoint is written, before the rename), then resume to step 6."""
    from megatron.core import parallel_state

    from megatron_wmss import distributed
    from megatron_wmss.training import checkpointing
    from megatron_wmss.training.loop import train

    init = {"strong": f"{workdir}/strong", "weak": f"{workdir}/weak"}
    root = Path(workdir) / "run" / "checkpoints"
    seen = {}

    def run(iters, die_at=None):
        cfg = make_config(Path(workdir) / "run", "wmss", **{"training.train_iters": iters,
                                                            "training.save_interval": 1})
        distributed.initialize(seed=cfg.training.seed)
        real_rng_state = checkpointing._rng_state

        def rng_state_or_die():
            if die_at is not None and (root / f"step_{die_at:07d}.tmp").is_dir():
                raise InjectedKill(f"killed while saving step {die_at}")
            return real_rng_state()

        checkpointing._rng_state = rng_state_or_die
        try:
            return train(cfg, dataset=ToySFTDataset(), hf_config=TINY_QWEN3, init=init, run_dir=Path(workdir) / "run")
        finally:
            checkpointing._rng_state = real_rng_state
            parallel_state.destroy_model_parallel()

    run(4)
    seen["after_4"] = sorted(p.name for p in root.iterdir())
    try:
        run(6, die_at=5)
    except InjectedKill:
        pass
    seen["after_kill"] = sorted(p.name for p in root.iterdir())
    seen["latest_after_kill"] = (root / "latest").read_text()
    result = run(6)
    seen["after_resume"] = sorted(p.name for p in root.iterdir())
    seen["final"] = result.checkpoint.name
    seen["final_step"] = json.loads((result.checkpoint / "trainer_state.json").read_text())["step"]
    distributed.destroy()
    return seen


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("retention")
    return run_ranks(sequence_rank, 1, (init_checkpoints_rank, str(workdir)), (interrupted_rank, str(workdir)))[0][1]


def test_keep_last_prunes_older_checkpoints_after_a_complete_save(interrupted):
    assert interrupted["after_4"] == ["latest", "step_0000003", "step_0000004"]
    assert interrupted["after_resume"] == ["latest", "step_0000005", "step_0000006"]


def test_a_save_killed_midway_leaves_latest_complete_and_resumes(interrupted):
    # nothing deleted by the incomplete save; `latest` still names step 4
    assert interrupted["after_kill"] == ["latest", "step_0000003", "step_0000004", "step_0000005.tmp"]
    assert interrupted["latest_after_kill"] == "step_0000004"
    assert (interrupted["final"], interrupted["final_step"]) == ("step_0000006", 6)
