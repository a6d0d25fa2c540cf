"""`wmss study` with the baseline arms and diagnostics, piece by piece (no training): neftune/undial arms
train from M1 with their objective; every arm gets a `wmss diagnose` job of weak, M1 and its model; the
diagnose.json files become study.md's table with lambda_cross, marked on the lambda-sweep plot."""

import json

from megatron_wmss.config import load_config
from megatron_wmss.study import diagnostics, report
from megatron_wmss.study.arms import build_arms
from megatron_wmss.study.plan import StudyPlan

STATS = ("target_logit_mean", "distractor_logit_mean", "gap", "logit_std", "centered_norm", "max_logit",
         "min_logit", "l2_norm", "entropy", "max_prob")


def _plan(tmp_path, arms):
    cfg = load_config(overrides=[f"study.arms=[{arms}]", "study.seeds=[1, 2]", "study.stage_steps=3",
                                 "data.path=/nonexistent", "study.lams=[0.3]"])
    return StudyPlan(cfg, tmp_path, build_arms(cfg.study.arms, cfg.study.lams, cfg.wmss.lam))


def _command(job):
    return job.commands()[0]


def test_baseline_arms_train_from_m1_with_their_objective_and_are_diagnosed(tmp_path):
    plan = _plan(tmp_path, "sft,neftune,undial,wdjt")
    assert [a.name for a in plan.arms] == ["sft", "neftune", "undial", "wdjt", "wdjt_lam0.3"]
    for arm in plan.arms[1:3]:
        train, _, diagnose = plan.arm_jobs(arm, 1)
        cmd = _command(train)
        assert f"training.objective={arm.name}" in cmd and cmd[cmd.index("--init-model") + 1] == str(plan.m1_checkpoint())
        assert "--active-set" not in cmd and "training.train_iters=3" in cmd
        cmd = _command(diagnose)
        assert cmd[cmd.index("megatron_wmss.cli") + 1] == "diagnose" and diagnose.deps == (f"train/{arm.name}/seed_1",)
        models = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"]
        assert models == [f"weak={plan.weak_checkpoint()}", f"strong_before={plan.m1_checkpoint()}",
                          f"strong_after={plan.arm_dir(arm.name, 1) / 'export' / 'model'}"]
    _, _, diagnose = plan.arm_jobs(plan.arms[3], 2)
    assert _command(diagnose)[-3] == f"strong_after={plan.arm_dir('wdjt', 2) / 'export' / 'strong'}"


def test_study_diagnose_false_leaves_the_diagnose_jobs_out(tmp_path):
    cfg = load_config(overrides=["study.arms=[sft, wdjt]", "study.stage_steps=3", "data.path=/nonexistent",
                                 "study.diagnose=false"])
    plan = StudyPlan(cfg, tmp_path, build_arms(cfg.study.arms, cfg.study.lams, cfg.wmss.lam))
    names = [job.name for arm in plan.arms for job in plan.arm_jobs(arm, 1)]
    assert names and not any(name.startswith("diagnose/") for name in names)
    assert any(name.startswith("train/") for name in names)


def _diagnosis(after: float) -> dict:
    base = {k: 1.0 for k in STATS}
    return {"models": {"weak": dict(base, centered_norm=1191.33, entropy=0.52, positions=9),
                       "strong_before": dict(base, centered_norm=1240.10, entropy=0.44, positions=9),
                       "strong_after": dict(base, distractor_logit_mean=after, positions=9, checkpoint="x")},
            "weak": "weak", "strong": "strong_before", "entropy_separation": 0.08, "alpha": 1.0836,
            "lambda_cross": 0.490, "samples": ["s"], "seed": 0}


def test_collect_averages_seeds_and_renders_the_table(tmp_path):
    dirs = {}
    for arm, values in (("sft", (2.0, 2.2)), ("wdjt", (0.8, 1.0)), ("undial", ())):
        dirs[arm] = {}
        for seed, value in enumerate(values or (None,)):
            run = tmp_path / arm / f"seed_{seed}"
            dirs[arm][seed] = run
            if value is not None:
                (run / "diagnose").mkdir(parents=True)
                (run / "diagnose" / "diagnose.json").write_text(json.dumps(_diagnosis(value)))
    found = diagnostics.collect(dirs)
    assert list(found["models"]) == ["weak", "m1", "sft", "wdjt"]  # undial: not diagnosed (yet)
    assert found["models"]["wdjt"]["distractor_logit_mean"] == 0.9 and found["models"]["wdjt"]["seeds"] == 2
    assert found["lambda_cross"] == 0.490
    text = "\n".join(diagnostics.markdown(found))
    assert "Δ `wdjt` − `m1`" in text and "-0.1 (-10.0%)" in text and "λ_cross = 1/(1+√α) = 0.490" in text
    assert diagnostics.collect({"sft": {1: tmp_path / "none"}}) == {} and diagnostics.markdown({}) == []


def test_sweep_plot_marks_lambda_cross(tmp_path):
    arms = {name: {"mean": acc, "ci95": [acc - 1, acc + 1], "seeds": {"1": {"accuracy": acc}}, "steps": 3}
            for name, acc in (("sft", 50.0), ("wdjt", 55.0), ("wdjt_lam0.3", 53.0), ("wdjt_lam0.9", 51.0))}
    result = {"arms": arms, "models": {}, "phase1": {}, "training_curves": {}, "meta": {"lam": 0.5},
              "diagnostics": {"lambda_cross": 0.49}}
    assert diagnostics.sweep_points(result, 0.5) == [(0.3, 53.0, [52.0, 54.0]), (0.5, 55.0, [54.0, 56.0]),
                                                      (0.9, 51.0, [50.0, 52.0])]
    report.plot(result, tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 0
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    report.plot_sweep(ax, diagnostics.sweep_points(result, 0.5), 0.49)
    assert any(list(line.get_xdata()) == [0.49, 0.49] for line in ax.lines)  # the predicted lambda_cross
    plt.close(fig)
