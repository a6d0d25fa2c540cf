"""SFT and WD-JT training: losses and parameters after 3 steps at TP=2, PP=2, DP=2 and TP=2 x PP=2, and
at TP=2 and TP=2 x PP=2 with sequence parallelism, equal the single-process run; bf16 (TP=1 and TP=2) tracks the fp32 run; lam=1 with a frozen weak branch is SFT
of the strong model; freezing keeps the weak weights bit-identical, training both changes both."""

import pytest

from megatron_wmss.testing import run_ranks
from tests.training_helpers import init_checkpoints_rank, load_exported_rank, read_metrics, train_runs_rank

LR = 1e-3  # training_helpers.make_config
SP = {"parallel.sequence_parallel": "true"}
LAYOUTS = {2: {"tp2": dict(tp=2), "tp2sp": dict(tp=2, **SP), "pp2": dict(pp=2), "dp2": dict(dist_opt=True)},
           4: {"tp2pp2": dict(tp=2, pp=2), "tp2pp2sp": dict(tp=2, pp=2, **SP)}}
OBJECTIVES = ("sft", "wmss")
BRANCHES = {"sft": ["model"], "wmss": ["strong", "weak"]}
LAM1_FROZEN = {"wmss.lam": 1.0, "wmss.freeze_weak": "true"}
BF16 = {"model.params_dtype": "bf16"}
BF16_RUNS = {1: {"bf16": BF16}, 2: {"bf16_tp2": dict(tp=2, **BF16)}}


def init_and_train_rank(workdir, runs: list):
    """The two starting models, then the single-process runs, in one process (launches are the slow part)."""
    init_checkpoints_rank(workdir)
    train_runs_rank(workdir, runs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Every run of this module, trained once: single-process references, then each layout."""
    path = tmp_path_factory.mktemp("training")
    single = [(f"{o}_ref", o, {}) for o in OBJECTIVES] + [("lam1_frozen", "wmss", LAM1_FROZEN)]
    single += [(f"{o}_{name}", o, opts) for o in OBJECTIVES for name, opts in BF16_RUNS[1].items()]
    run_ranks(init_and_train_rank, 1, str(path), single)
    for world, layouts in LAYOUTS.items():
        runs = [(f"{o}_{name}", o, layout) for o in OBJECTIVES for name, layout in layouts.items()]
        runs += [(f"{o}_{name}", o, opts) for o in OBJECTIVES for name, opts in BF16_RUNS.get(world, {}).items()]
        run_ranks(train_runs_rank, world, str(path), runs, timeout_s=600)
    return path


@pytest.fixture(scope="module")
def params(workdir):
    """Parameters of the starting models and of every exported branch, loaded in one process:
    {path relative to workdir: {name: tensor}}."""
    dirs = ["strong", "weak"] + sorted(str(d.relative_to(workdir)) for d in workdir.glob("*/export/*") if d.is_dir())
    loaded = run_ranks(load_exported_rank, 1, [str(workdir / d) for d in dirs])[0]
    return {d: loaded[str(workdir / d)] for d in dirs}


def _params(params, *export_dirs):
    return [params[d] for d in export_dirs]


def _losses(workdir, run):
    return [m["loss"] for m in read_metrics(workdir / run)]


def _assert_same_params(got: dict, want: dict, what: str):
    """Within 1% of one Adam step (lr): fp32 summation order differs between layouts."""
    assert got.keys() == want.keys()
    for name, ref in want.items():
        diff = (got[name] - ref).abs().max().item()
        assert diff <= 1e-2 * LR, f"{what} {name}: max |difference| {diff:.2e}"


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_parallel_layouts_match_single_process(workdir, params, objective):
    runs = [f"{objective}_{name}" for layouts in LAYOUTS.values() for name in layouts]
    for run in runs:
        assert _losses(workdir, run) == pytest.approx(_losses(workdir, f"{objective}_ref"), rel=1e-6), run
    for branch in BRANCHES[objective]:
        want, *got = _params(params, f"{objective}_ref/export/{branch}", *[f"{r}/export/{branch}" for r in runs])
        for run, run_params in zip(runs, got):
            _assert_same_params(run_params, want, f"{run} {branch}")


def test_lam1_frozen_weak_is_sft_of_strong_and_weak_unchanged(workdir, params):
    assert _losses(workdir, "lam1_frozen") == pytest.approx(_losses(workdir, "sft_ref"), rel=1e-6)
    sft, strong, weak_after, weak_before = _params(
        params, "sft_ref/export/model", "lam1_frozen/export/strong", "lam1_frozen/export/weak", "weak")
    _assert_same_params(strong, sft, "lam=1 strong vs SFT")
    for name, before in weak_before.items():
        assert weak_after[name].equal(before), f"frozen weak {name} changed"


def test_training_both_branches_changes_both(params):
    """Every tensor of both branches moved as 3 Adam steps move it: Adam's update per element is about
    the learning rate (1, 2/3, 1/3 of LR with the linear decay), so the mean |change| lies between a
    tenth of LR and a few LR; a branch left out of the optimizer, or trained at a vanishing rate, fails."""
    strong_before, weak_before, strong_after, weak_after = _params(
        params, "strong", "weak", "wmss_ref/export/strong", "wmss_ref/export/weak")
    for branch, before, after in (("strong", strong_before, strong_after), ("weak", weak_before, weak_after)):
        for name, old in before.items():
            moved = (after[name] - old).abs().mean().item()
            assert 0.1 * LR <= moved <= 3 * LR, f"{branch} {name}: mean |change| {moved:.2e} (LR {LR})"


BF16_LOSS_RTOL = 1e-3  # docs/training.md states both bounds; measured: losses ~6e-5, parameters <= 0.04 lr


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_bf16_tracks_fp32(workdir, params, objective):
    """bf16 parameters (fp32 main weights and grads in megatron's optimizer) at TP=1 and TP=2: each of
    the 3 losses within 0.1% relative of the fp32 run's, and each parameter tensor, on average, within a
    tenth of one Adam step (lr) of the fp32 run's rounded to bf16, or within one bf16 rounding of its
    size (norm weights near 1, whose bf16 spacing is ~4 lr). A bf16 run that lost its updates would be
    ~1.3 lr away."""
    ref = _losses(workdir, f"{objective}_ref")
    for name in (n for runs in BF16_RUNS.values() for n in runs):
        assert _losses(workdir, f"{objective}_{name}") == pytest.approx(ref, rel=BF16_LOSS_RTOL), name
        for branch in BRANCHES[objective]:
            want, got = _params(params, f"{objective}_ref/export/{branch}", f"{objective}_{name}/export/{branch}")
            for pname, ref_param in want.items():
                diff = (got[pname].float() - ref_param.bfloat16().float()).abs().mean().item()
                bound = max(0.1 * LR, 2 ** -8 * ref_param.abs().mean().item())
                assert diff <= bound, f"{name} {branch} {pname}: mean |bf16 - fp32 run| {diff:.2e} > {bound:.2e}"
