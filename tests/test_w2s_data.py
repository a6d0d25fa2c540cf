"""Weak-to-strong data steps on hand-made cases: final answers, majority and confidence (ties, no answer),
Stage I consistency (consistent, inconsistent, ties, no answer, missing; the three variants), Stage II
pairs (confident, not confident, tie, no contrast), answers compared by math-verify, and the command."""

import json

import pytest

from megatron_wmss.cli import main as wmss
from megatron_wmss.w2s.answers import final_answer, majority, math_verify_same
from megatron_wmss.w2s.consistency import check_question, filter_rows
from megatron_wmss.w2s.contrast import build_pair, pair_rows


def sol(answer, text="work"):
    return f"{text} \\boxed{{{answer}}}"


PROMPT = [{"role": "user", "content": "q"}]


def test_final_answer():
    assert final_answer("a \\boxed{1} then \\boxed{ 2 }") == "2"
    assert final_answer("<answer>\\boxed{3}</answer> \\boxed{9}") == "3"  # the answer region
    assert final_answer("no box here, 5") is None
    assert final_answer("\\boxed{}") is None
    assert final_answer("\\boxed{1") is None  # unbalanced


def test_math_verify_compares_answers():
    assert math_verify_same("\\frac{1}{2}", "0.5")
    assert math_verify_same("6", "6")
    assert not math_verify_same("6", "7")


def test_majority_and_confidence():
    same = str.__eq__
    assert majority(["4", "4", "5", None], same) == ([0, 1], 0.5)  # share of ALL samples
    assert majority(["4", "5"], same) is None  # tie
    assert majority([None, None], same) is None  # no answer
    members, confidence = majority(["\\frac{1}{2}", "0.5", "1"])  # math-verify classes
    assert members == [0, 1] and confidence == pytest.approx(2 / 3)


@pytest.mark.parametrize("weak, icl, kept, reason", [
    ([sol("12")], [sol("12.0")], True, "consistent"),
    ([sol("12")], [sol("13")], False, "inconsistent"),
    ([sol("1"), sol("2")], [sol("1")], False, "tie"),
    (["no answer"], [sol("1")], False, "no_answer"),
    ([sol("1")], [], False, "missing"),
    ([sol("1"), sol("2"), sol("2", "second")], [sol("2")], True, "consistent"),  # majority of each source
])
def test_consistency_verdicts(weak, icl, kept, reason):
    verdict = check_question(weak, icl)
    assert (verdict.kept, verdict.reason) == (kept, reason)


def _samples(**by_id):
    return {qid: {"id": qid, "prompt": PROMPT, "samples": samples} for qid, samples in by_id.items()}


def test_filter_rows_variants():
    weak = _samples(a=[sol("1", "weak-a")], b=[sol("2", "weak-b")], c=["none"])
    icl = _samples(a=[sol("1", "icl-a")], b=[sol("3", "icl-b")], c=[sol("4")])
    for variant, ids in (("weak", ["a/weak"]), ("icl", ["a/icl"]), ("hybrid", ["a/weak", "a/icl"])):
        rows, counts = filter_rows(weak, icl, variant)
        assert [r["id"] for r in rows] == ids
        assert counts == {"consistent": 1, "inconsistent": 1, "no_answer": 1}
    rows, _ = filter_rows(weak, icl, "hybrid")
    assert rows[0]["messages"] == PROMPT + [{"role": "assistant", "content": sol("1", "weak-a")}]
    assert rows[1]["messages"][-1]["content"] == sol("1", "icl-a")


@pytest.mark.parametrize("strong, weak, reason, chosen, rejected", [
    ([sol("5", "s1"), sol("5", "s2"), sol("6")], ["bad", sol("5"), sol("7", "w")], "pair", sol("5", "s1"), sol("7", "w")),
    ([sol("5"), sol("5"), sol("6"), sol("7"), sol("8")], [sol("1")], "not_confident", None, None),  # 2/5 < 0.6
    ([sol("5"), sol("6")], [sol("1")], "no_majority", None, None),  # tie
    (["x", "y"], [sol("1")], "no_majority", None, None),  # no answers
    ([sol("5"), sol("5")], [sol("5.0"), "no answer"], "no_contrast", None, None),
    ([sol("5")], [], "missing", None, None),
])
def test_pair_verdicts(strong, weak, reason, chosen, rejected):
    verdict = build_pair(strong, weak, min_confidence=0.6)
    assert (verdict.reason, verdict.chosen, verdict.rejected) == (reason, chosen, rejected)


def test_pair_rows_and_confidence_threshold():
    strong = _samples(a=[sol("5"), sol("5"), sol("6")], b=[sol("1")] * 3)
    weak = _samples(a=[sol("7")], b=[sol("2")])
    rows, counts = pair_rows(strong, weak, min_confidence=0.7)
    assert [r["id"] for r in rows] == ["b"] and counts == {"not_confident": 1, "pair": 1}
    assert rows[0]["info"]["confidence"] == 1.0 and rows[0]["prompt"] == PROMPT
    rows, _ = pair_rows(strong, weak, min_confidence=2 / 3)
    assert [r["id"] for r in rows] == ["a", "b"]


def test_commands(tmp_path, capsys):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
        return str(path)

    weak = write("weak.jsonl", _samples(a=[sol("1")], b=[sol("2")]))
    icl = write("icl.jsonl", _samples(a=[sol("1")], b=[sol("3")]))
    assert wmss(["w2s", "filter", "--weak", weak, "--icl", icl, "--variant", "icl", "--output", str(tmp_path / "s.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == {"consistent": 1, "inconsistent": 1}
    assert [json.loads(x)["id"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == ["a/icl"]
    strong = write("strong.jsonl", _samples(a=[sol("1")] * 2, b=[sol("3")] * 2))
    assert wmss(["w2s", "pairs", "--strong", strong, "--weak", weak, "--min-confidence", "1",
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    assert [json.loads(x)["id"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == ["b"]
    assert wmss(["w2s", "pairs", "--strong", strong, "--weak", weak, "--min-confidence", "0",
                 "--output", str(tmp_path / "p.jsonl")]) == 2
    assert "--min-confidence" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    assert wmss(["w2s", "filter", "--weak", str(tmp_path / "bad.jsonl"), "--icl", icl, "--output", "x"]) == 2
    assert "--weak" in capsys.readouterr().err
