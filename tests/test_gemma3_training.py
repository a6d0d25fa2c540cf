"""WD-JT trains a Gemma-3 pair (sliding window 4 < sequence 12, sandwich norms, tied embeddings) at TP=2 and
PP=2 to the same losses and parameters as one process (3 steps, as tests/test_training_parallel.py does
for Qwen3), and the (1 + w) norms, q/k norms and post norms all learn."""

import pytest

from megatron_wmss.testing import run_ranks
from tests.training_helpers import SEQ, init_checkpoints_rank, load_exported_rank, read_metrics, train_runs_rank

LR = 1e-3  # training_helpers.make_config
TINY_GEMMA3 = dict(model_type="gemma3_text", vocab_size=90, hidden_size=32, intermediate_size=64,
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   query_pre_attn_scalar=8, sliding_window=4, tie_word_embeddings=True,
                   layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=64,
                   rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
assert TINY_GEMMA3["sliding_window"] < SEQ
RUNS = {1: [("ref", "wmss", {})], 2: [("tp2", "wmss", dict(tp=2)), ("pp2", "wmss", dict(pp=2))]}


def init_and_train_rank(workdir, runs: list):
    """The two starting models, then the single-process run, in one process (launches are the slow part)."""
    init_checkpoints_rank(workdir, TINY_GEMMA3)
    train_runs_rank(workdir, runs, TINY_GEMMA3)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma3_training")
    run_ranks(init_and_train_rank, 1, str(path), RUNS[1])
    run_ranks(train_runs_rank, 2, str(path), RUNS[2], TINY_GEMMA3, timeout_s=600)
    return path


@pytest.fixture(scope="module")
def params(workdir):
    paths = [str(workdir / d) for d in ("strong", "weak")]
    paths += [str(workdir / run / "export" / b) for runs in RUNS.values() for run, _, _ in runs for b in ("strong", "weak")]
    return run_ranks(load_exported_rank, 1, paths, TINY_GEMMA3)[0]


@pytest.mark.parametrize("layout", [run for run, _, _ in RUNS[2]])
def test_wdjt_gemma3_parallel_matches_single_process(workdir, params, layout):
    losses = [m["loss"] for m in read_metrics(workdir / layout)]
    assert losses == pytest.approx([m["loss"] for m in read_metrics(workdir / "ref")], rel=1e-6)
    for branch in ("strong", "weak"):
        want = params[str(workdir / "ref" / "export" / branch)]
        got = params[str(workdir / layout / "export" / branch)]
        assert got.keys() == want.keys()
        for name, ref in want.items():
            diff = (got[name] - ref).abs().max().item()
            assert diff <= 1e-2 * LR, f"{layout} {branch} {name}: max |difference| {diff:.2e}"


def test_every_gemma3_parameter_learns(workdir, params):
    for branch in ("strong", "weak"):
        before, after = params[str(workdir / branch)], params[str(workdir / "ref" / "export" / branch)]
        unchanged = [n for n in before if after[n].equal(before[n])]
        assert not unchanged, f"{branch}: parameters not updated: {unchanged}"
        assert any("post_layernorm" in n for n in before) and any("q_layernorm" in n for n in before)
