"""Config: paper defaults, YAML recipes, dotted overrides, validation messages that name the option."""

import pytest

from megatron_wmss.config import ConfigError, load_config


def test_paper_defaults():
    cfg = load_config()
    assert (cfg.wmss.alpha, cfg.wmss.beta, cfg.wmss.gamma, cfg.wmss.lam) == (0.1, 0.8, 0.1, 0.5)
    assert cfg.wmss.iterations == 1 and cfg.wmss.dedupe and not cfg.wmss.freeze_weak
    t = cfg.training
    assert (t.lr, t.global_batch_size, t.clip_grad, t.warmup_fraction) == (1e-5, 512, 1.0, 0.1)
    assert cfg.data.seq_length == 4096 and cfg.eval.max_new_tokens is None  # per-benchmark: 4096, 8192 for AIME/AMC


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("parallel:\n  tp: 2\ntraining:\n  lr: 2.0e-5\n  objective: wmss\n")
    cfg = load_config(recipe, ["training.lr=3e-5", "wmss.lam=0.42", "eval.benchmarks=gsm8k,math500",
                               "training.train_iters=null"])
    assert cfg.parallel.tp == 2 and cfg.training.objective == "wmss"
    assert cfg.training.lr == 3e-5 and cfg.wmss.lam == 0.42
    assert cfg.eval.benchmarks == ["gsm8k", "math500"] and cfg.training.train_iters is None


@pytest.mark.parametrize("override,option", [
    ("wmss.lam=1.5", "wmss.lam"),
    ("wmss.beta=-1", "wmss.beta"),
    ("training.objective=ppo", "training.objective"),
    ("preference.beta=0", "preference.beta"),
    ("preference.label_smoothing=0.5", "preference.label_smoothing"),
    ("parallel.tp=0", "parallel.tp"),
    ("training.lr=fast", "training.lr"),
    ("training.nonsense=1", "training.nonsense"),
    ("eval.pass_at_k=[4]", "eval.pass_at_k"),
    ("eval.benchmarks=[gsm8k,gsm9k]", "eval.benchmarks: unknown benchmark 'gsm9k'"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.top_p=0", "eval.top_p"),
    ("model.fp8=e5m2", "model.fp8"),
    ("parallel.vpp=2", "parallel.vpp"),
])
def test_invalid_options_are_named(override, option):
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        load_config(overrides=[override])


@pytest.mark.parametrize("overrides,message", [
    (["parallel.cp=2"], r"parallel\.cp: context parallelism is not implemented"),
    (["parallel.pp=2", "parallel.vpp=2"], r"parallel\.vpp: virtual pipeline stages are not implemented"),
    (["model.params_dtype=fp16"], r"model\.params_dtype: fp16 is not supported \(no loss scaler"),
])
def test_unimplemented_options_are_refused_by_name(overrides, message):
    """Accepted-but-ignored settings would train something else than asked: refused, with the reason."""
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_sequence_parallel_needs_a_sequence_divisible_by_tp():
    with pytest.raises(ConfigError, match=r"parallel\.sequence_parallel: .*data\.seq_length \(4098\) must be "
                                          r"divisible by parallel\.tp"):
        load_config(overrides=["parallel.tp=4", "parallel.sequence_parallel=true", "data.seq_length=4098"])
    load_config(overrides=["parallel.tp=4", "parallel.sequence_parallel=true", "data.seq_length=4096"])
    load_config(overrides=["parallel.sequence_parallel=true", "data.seq_length=4097"])  # tp = 1: a no-op


def test_missing_recipe_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.option=value"):
        load_config(overrides=["training.lr"])


def test_example_recipes_validate():
    """Every recipe shipped in examples/ loads and passes validation."""
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "examples").rglob("*.yaml"))
    assert len(recipes) >= 2
    for recipe in recipes:
        load_config(recipe)
