"""The quickstart task's difficulty presets: "easy" generates exactly the files it did before the difficulty
knobs existed, and "two_digit" and "plateau" generate valid, verifiable problems of the kinds they are meant
to have."""

import hashlib
import json
import re

import pytest

from megatron_wmss.eval.extraction import last_boxed
from megatron_wmss.quickstart.task import (TASK_PRESETS, TaskConfig, generate_splits, pretrain_corpus, subset,
                                           write_task)

# sha256 of the files written by write_task(TaskConfig(num_train=300, num_test=50, seed=3), 200 documents)
# with the generator as it was before group steps were added (commit ea47371).
EASY_SHA256 = {
    "train.jsonl": "bbc8b79d2f0f8630b680fd0349d51260362466a3f29fc96426ec08bc78b5bd97",
    "test.jsonl": "b8a5c75071363a56abe41e6a0913c3f7fcdcf21f00c903d6eb61254e046fb275",
    "test_benchmark.jsonl": "3b0c24e90ffae0693694d05993c562191994cd5addc3fd9e0ee243847e8f7ecc",
    "pretrain.jsonl": "7303909950917aae4059c62d733d3a2fafd64dd5c1fc10eaabfc2aa3c6755f5e",
}
EQUATION = re.compile(r"^(\d+) ([-+*]) (\d+) = (\d+)$")


def test_easy_preset_is_the_default_and_unchanged(tmp_path):
    assert TASK_PRESETS["easy"] == TaskConfig()
    write_task(tmp_path, TaskConfig(num_train=300, num_test=50, seed=3), 200)
    for name, digest in EASY_SHA256.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest, name


def _check_chain(p: dict, cfg: TaskConfig) -> tuple[int, int]:
    """Recompute a worked solution: every equation is true and chains from the start value to the answer;
    a product with factors in the hard ranges is the last step. Returns (number of steps without the hard
    step, number of group steps)."""
    start = re.match(r"Start: (\d+)\.", p["think"])
    value, steps, groups, product, hard = int(start.group(1)), 0, 0, None, False
    assert p["problem"].split()[2] == str(value)
    lo_k, hi_k, lo_m, hi_m = cfg.hard_factors
    for eq in p["equations"]:
        assert not hard or product is not None, f"a step after the hard step: {eq}"
        a, op, b, c = EQUATION.match(eq).groups()
        a, b, c = int(a), int(b), int(c)
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op], eq
        if op == "*":
            hard = cfg.hard_prob > 0 and lo_k <= a <= hi_k and lo_m <= b <= hi_m and b > cfg.max_factor
            assert hard or (2 <= min(a, b) and max(a, b) <= cfg.max_factor), eq
            assert f"{a} boxes of {b}: {eq}" in p["think"] or f"{a} bags of {b}: {eq}" in p["think"]
            product, groups = c, groups + (not hard)
            continue
        assert a == value and (product is None or b == product), eq
        assert 0 <= c <= cfg.max_value or (hard and op == "+"), eq
        value, steps, product = c, steps + (not hard), None
        assert f"{eq}." in p["think"] or f"{eq}, " in p["think"]
    assert value == p["answer"] and p["think"].endswith(f" = {value}.")
    return steps, groups


def test_two_digit_preset_problems_are_valid_and_of_the_intended_kinds():
    cfg = TaskConfig(**{**TASK_PRESETS["two_digit"].__dict__, "num_train": 400, "num_test": 100})
    train, test = generate_splits(cfg)
    assert not {p["problem"] for p in train} & {p["problem"] for p in test}
    counts = {"group": 0, "carry": 0, "borrow": 0, "long": 0}
    for p in train + test:
        steps, groups = _check_chain(p, cfg)
        assert cfg.min_steps <= steps <= cfg.max_steps
        assert last_boxed(f"<answer>\\boxed{{{p['answer']}}}</answer>") == str(p["answer"])
        counts["group"] += groups > 0
        counts["long"] += steps == cfg.max_steps
        for eq in p["equations"]:
            a, op, b, _ = EQUATION.match(eq).groups()
            counts["carry"] += op == "+" and int(a[-1]) + int(b[-1]) >= 10
            counts["borrow"] += op == "-" and int(a[-1]) < int(b[-1])
    n = len(train) + len(test)
    assert 0.2 * n < counts["group"] < 0.9 * n  # a mix of problems with and without multiplications
    assert min(counts.values()) > 0.1 * n
    assert max(p["answer"] for p in train) > 90
    corpus = pretrain_corpus(cfg, 400, exclude={p["problem"] for p in test})
    assert any(re.fullmatch(r"(\d+ [-+*] \d+ = \d+\. ?)+", d) and " * " in d for d in corpus)  # product facts
    assert any(" boxes of " in d or " bags of " in d for d in corpus)
    assert not any(d.startswith(p["problem"]) for d in corpus for p in test)


def test_plateau_preset_adds_a_hard_product_to_about_half_the_problems(tmp_path):
    """"plateau" = "easy" + a last one-digit x two-digit product step on about half of the problems; the
    benchmark file labels each held-out problem "easy" or "hard" by that step."""
    cfg = TaskConfig(**{**TASK_PRESETS["plateau"].__dict__, "num_train": 400, "num_test": 100})
    assert {k: v for k, v in cfg.__dict__.items() if k not in ("hard_prob", "hard_factors", "num_train", "num_test")} \
        == {k: v for k, v in TaskConfig().__dict__.items() if k not in ("hard_prob", "hard_factors", "num_train", "num_test")}
    train, test = generate_splits(cfg)
    hard = 0
    for p in train + test:
        steps, groups = _check_chain(p, cfg)
        assert cfg.min_steps <= steps <= cfg.max_steps and groups == 0
        has_hard = any(" * " in eq for eq in p["equations"])
        assert subset(p, cfg) == ("hard" if has_hard else "easy")
        hard += has_hard
    assert 0.4 < hard / len(train + test) < 0.6
    write_task(tmp_path, cfg, 50)
    rows = [json.loads(line) for line in (tmp_path / "test_benchmark.jsonl").read_text().splitlines()]
    assert [r["subset"] for r in rows] == [subset(p, cfg) for p in test]


@pytest.mark.parametrize("field,value", [("min_steps", 0), ("group_prob", 1.5), ("max_factor", 1),
                                         ("max_start", 40), ("hard_prob", -0.1), ("hard_factors", (9, 3, 11, 99))])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TaskConfig(**{field: value})
