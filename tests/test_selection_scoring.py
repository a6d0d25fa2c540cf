"""The WD-DS scoring pass (Eq. 7, shifted, vocab-parallel, fp32) equals a float64 single-process
reference at TP=1, TP=2, TP=2 with sequence parallelism, PP=2 and DP=2, and resumes by sample id."""

import json
from pathlib import Path

import pytest
import torch

from megatron_wmss.testing import run_ranks
from tests.training_helpers import SEQ, TINY_QWEN3, ToySFTDataset, init_checkpoints_rank, make_config, sequence_rank

NUM_SAMPLES = 10


def reference_rank(workdir):
    """Megatron fp32 logits of each model at TP=1, entropy in float64 over the supervised positions."""
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize()
    tcfg, arch = transformer_config_from_hf(TINY_QWEN3, make_vocab_size_divisible_by=8)
    out = {}
    for name in ("strong", "weak"):
        model = build_gpt_model(tcfg, arch)
        load_model(model, f"{workdir}/{name}")
        model.eval()
        for row in ToySFTDataset(NUM_SAMPLES):
            with torch.no_grad():
                logits = model(row["tokens"][None], row["position_ids"][None], attention_mask=None)[0]
            logp = torch.log_softmax(logits[:, :arch.vocab_size].double(), dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)
            mask = row["loss_mask"].double()
            out.setdefault(row["sample_id"], {})[f"h_{name}"] = ((entropy * mask).sum() / mask.sum()).item()
    distributed.destroy()
    return out


def scoring_rank(workdir, layouts):
    from megatron.core import parallel_state

    from megatron_wmss import distributed
    from megatron_wmss.selection.run import build_scoring_pair
    from megatron_wmss.selection.scoring import score_dataset

    results = {}
    for name, (tp, pp, sp) in layouts.items():
        cfg = make_config(Path(workdir) / name, "wmss", tp, pp, **{"training.micro_batch_size": 2,
                                                                  "parallel.sequence_parallel": str(sp).lower()})
        distributed.initialize(tp=tp, pp=pp)
        pair = build_scoring_pair(cfg, TINY_QWEN3, f"{workdir}/weak", f"{workdir}/strong")
        results[name] = score_dataset(pair, ToySFTDataset(NUM_SAMPLES), Path(workdir) / name,
                                      micro_batch_size=2, seq_length=SEQ, progress=False)
        parallel_state.destroy_model_parallel()
    distributed.destroy()
    return results


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scoring")
    # resume: pre-seed two finished samples with sentinel values in the TP=1 directory
    (workdir / "tp1" / "scores").mkdir(parents=True)
    seeded = [{"id": f"toy-{i}", "tokens": 1, "h_strong": 123.0, "h_weak": 456.0} for i in (0, 5)]
    (workdir / "tp1" / "scores" / "rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeded))
    _, reference, results = run_ranks(sequence_rank, 1, (init_checkpoints_rank, str(workdir)),
                                      (reference_rank, str(workdir)), (scoring_rank, str(workdir), {"tp1": (1, 1, False)}))[0]
    layouts = {"tp2": (2, 1, False), "tp2sp": (2, 1, True), "pp2": (1, 2, False), "dp2": (1, 1, False)}
    results.update(run_ranks(scoring_rank, 2, str(workdir), layouts)[0])
    return reference, results


@pytest.mark.parametrize("layout", ["tp1", "tp2", "tp2sp", "pp2", "dp2"])
def test_scores_match_float64_reference(scored, layout):
    reference, results = scored
    got = results[layout]
    assert set(got) == set(reference)
    for sid, ref in reference.items():
        if layout == "tp1" and sid in ("toy-0", "toy-5"):
            continue  # resumed: checked below
        for key in ("h_strong", "h_weak"):
            assert got[sid][key] == pytest.approx(ref[key], rel=1e-5), (sid, key)
        assert got[sid]["tokens"] == int(ToySFTDataset(NUM_SAMPLES)[int(sid[4:])]["loss_mask"].sum())


def test_resume_keeps_finished_samples(scored):
    _, results = scored
    for sid in ("toy-0", "toy-5"):
        assert (results["tp1"][sid]["h_strong"], results["tp1"][sid]["h_weak"]) == (123.0, 456.0)
