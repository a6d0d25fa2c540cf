"""DPO and ORPO training: 3 steps at TP=2, PP=2 and DP=2 equal the single-process run (losses and exported
parameters); DPO from a reference equal to the starting policy starts at loss log 2 with zero reward
margin; the pair dataset pairs chosen and rejected rows of one prompt."""

import math
from pathlib import Path

import pytest
import torch

from megatron_wmss.testing import run_ranks
from tests.training_helpers import SEQ, TINY_QWEN3, init_checkpoints_rank, load_exported_rank, make_config, read_metrics

LR = 1e-3
OBJECTIVES = ("dpo", "orpo")
LAYOUTS = {"tp2": dict(tp=2), "pp2": dict(pp=2), "dp2": {}}


class ToySequences(torch.utils.data.Dataset):
    """Rows stored chosen, rejected, chosen, ... as preprocessing writes pair data: both rows of a pair
    share their prompt tokens and differ in the completion; completions of different lengths."""

    def __init__(self, pairs: int = 8, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.rows, self.sample_ids = [], []
        for i in range(pairs):
            prompt = torch.randint(0, TINY_QWEN3["vocab_size"], (3 + i % 3,), generator=gen)
            for kind, length in (("chosen", SEQ - len(prompt) + 1 - i % 2), ("rejected", SEQ - len(prompt) + 1 - i % 3)):
                ids = torch.cat([prompt, torch.randint(0, TINY_QWEN3["vocab_size"], (length,), generator=gen)])
                ids = torch.cat([ids, torch.zeros(SEQ + 1 - len(ids), dtype=torch.long)])
                mask = torch.zeros(SEQ)
                mask[len(prompt) - 1:len(prompt) - 1 + length] = 1.0
                self.rows.append(dict(tokens=ids[:-1], labels=ids[1:], loss_mask=mask, position_ids=torch.arange(SEQ),
                                      sample_id=f"pair-{i}/{kind}"))
                self.sample_ids.append(f"pair-{i}/{kind}")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def train_rank(workdir, runs):
    from megatron.core import parallel_state

    from megatron_wmss import distributed
    from megatron_wmss.data.pairs import PairDataset
    from megatron_wmss.training.loop import train

    for run_name, objective, options in runs:
        options = dict(options)
        tp, pp = options.pop("tp", 1), options.pop("pp", 1)
        run_dir = Path(workdir) / run_name
        cfg = make_config(run_dir, objective, tp, pp, **options)
        distributed.initialize(tp=tp, pp=pp, seed=cfg.training.seed)
        init = {"model": f"{workdir}/strong"}
        if objective == "dpo":
            init["reference"] = f"{workdir}/strong"
        result = train(cfg, dataset=PairDataset(ToySequences()), hf_config=TINY_QWEN3, init=init, run_dir=run_dir)
        result.export(run_dir / "export", TINY_QWEN3, None)
        parallel_state.destroy_model_parallel()
    distributed.destroy()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("preference")
    run_ranks(init_checkpoints_rank, 1, str(path))
    opts = {"preference.beta": 0.5, "preference.label_smoothing": 0.1, "preference.orpo_lambda": 0.5}
    run_ranks(train_rank, 1, str(path), [(f"{o}_ref", o, opts) for o in OBJECTIVES])
    run_ranks(train_rank, 2, str(path), [(f"{o}_{name}", o, {**opts, **layout})
                                        for o in OBJECTIVES for name, layout in LAYOUTS.items()], timeout_s=600)
    return path


def test_pair_dataset_items():
    from megatron_wmss.data.pairs import PairDataset

    pairs = PairDataset(ToySequences(pairs=3))
    assert len(pairs) == 3 and pairs.sample_ids == ["pair-0", "pair-1", "pair-2"]
    item = pairs[1]
    assert item["tokens"].shape == (2, SEQ) and item["sample_id"] == "pair-1"
    assert item["tokens"][:, :4].eq(item["tokens"][0, :4]).all()  # shared prompt
    seqs = ToySequences(pairs=2)
    seqs.sample_ids[1] = "pair-1/rejected"
    with pytest.raises(ValueError, match="not pair data"):
        PairDataset(seqs)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_parallel_layouts_match_single_process(workdir, objective):
    ref = read_metrics(workdir / f"{objective}_ref")
    want = _params(workdir, f"{objective}_ref")
    for name in LAYOUTS:
        got = read_metrics(workdir / f"{objective}_{name}")
        assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in ref], rel=1e-6), name
        assert [m["reward_accuracy"] for m in got] == [m["reward_accuracy"] for m in ref], name
        # margins are differences of fp32 sequence log-probs of ~40 nats: summation order moves them ~1e-6
        assert [m["reward_margin"] for m in got] == pytest.approx([m["reward_margin"] for m in ref], abs=1e-5), name
        assert [m["pairs"] for m in got] == [4.0, 4.0, 4.0]
        for pname, value in _params(workdir, f"{objective}_{name}").items():
            diff = (value - want[pname]).abs().max().item()
            assert diff <= 1e-2 * LR, f"{objective} {name} {pname}: max |difference| {diff:.2e}"


def test_dpo_starts_at_log2_and_learns(workdir):
    """Reference = starting policy: every implicit reward is 0 at step 1, so the cDPO loss is log 2 for any
    label smoothing; the policy then moves and the chosen-minus-rejected margin turns positive."""
    metrics = read_metrics(workdir / "dpo_ref")
    assert metrics[0]["loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[-1]["reward_margin"] > 0
    start = _params(workdir, None)
    moved = max((v - start[k]).abs().max().item() for k, v in _params(workdir, "dpo_ref").items())
    assert moved > 0.1 * LR


def test_orpo_logs_its_parts(workdir):
    first = read_metrics(workdir / "orpo_ref")[0]
    assert first["loss"] == pytest.approx(first["nll"] + 0.5 * first["odds_ratio_loss"], rel=1e-6)


def _params(workdir, run):
    path = str(workdir / "strong") if run is None else str(workdir / run / "export" / "model")
    return run_ranks(load_exported_rank, 1, [path])[0][path]
