"""Grading of hand-written responses: LaTeX forms, wrong, no box, malformed, timeouts (soft and hard)."""

import time

import pytest

from megatron_wmss.eval import extraction as ex
from megatron_wmss.eval.grading import Grader, GradingOptions, grade_task, make_task

PATHOLOGICAL = r"<answer>\boxed{9^{9^{9^{9}}}}</answer>"  # sympy tries to evaluate it when comparing to 7
AQUA_CHOICES = {"A": "5(√3 + 1)", "B": "12", "C": "36", "D": "8.5", "E": "None of these"}


@pytest.fixture(scope="module")
def grader():
    with Grader(GradingOptions(timeout_s=5.0), workers=2) as g:  # generous: the test machine may be loaded
        yield g


CASES = [  # (response, reference, answer_type, choices, correct, reason)
    # math: the same value in several LaTeX forms
    (r"<think>14/3</think><answer>So $\boxed{\frac{14}{3}}$.</answer>", r"\frac{14}{3}", "math", None, True, "correct"),
    (r"\boxed{\dfrac{14}{3}}", r"\frac{14}{3}", "math", None, True, "correct"),
    (r"\boxed{\tfrac{14}{3}}", r"\frac{14}{3}", "math", None, True, "correct"),
    (r"\boxed{4\frac{2}{3}}", r"\frac{14}{3}", "math", None, True, "correct"),
    (r"\boxed{14/3}", r"\frac{14}{3}", "math", None, True, "correct"),
    (r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", "math", None, True, "correct"),
    (r"\boxed{\left(3, \frac{\pi}{2}\right)}", r"\left( 3, \frac{\pi}{2} \right)", "math", None, True, "correct"),
    (r"\boxed{3\sqrt{13}}", r"3\sqrt{13}", "math", None, True, "correct"),
    (r"\boxed{\sqrt{117}}", r"3\sqrt{13}", "math", None, True, "correct"),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", "math", None, True, "correct"),
    (r"\fbox{6-5i}", r"6 - 5i", "math", None, True, "correct"),
    # the <answer> block wins over boxes in the reasoning; the last box in it counts
    (r"<think>\boxed{5}</think><answer>\boxed{4} then \boxed{14/3}</answer>", r"\frac{14}{3}", "math", None,
     True, "correct"),
    (r"<think>\boxed{14/3}</think><answer>\boxed{5}</answer>", r"\frac{14}{3}", "math", None, False, "wrong"),
    # wrong, no box, empty box, malformed
    (r"\boxed{4.6667}", r"\frac{14}{3}", "math", None, False, "wrong"),
    (r"\boxed{(3, \pi)}", r"\left( 3, \frac{\pi}{2} \right)", "math", None, False, "wrong"),
    (r"The answer is $\frac{14}{3}$.", r"\frac{14}{3}", "math", None, False, "no_answer"),
    (r"<answer>\boxed{}</answer>", r"\frac{14}{3}", "math", None, False, "no_answer"),
    (r"\boxed{\frac{14}{3}", r"\frac{14}{3}", "math", None, False, "unparsable"),
    (r"\boxed{\frac{14}{}}", r"\frac{14}{3}", "math", None, False, "unparsable"),
    ("", r"\frac{14}{3}", "math", None, False, "no_answer"),
    # numeric (GSM8K/SVAMP/MAWPS/AIME/AMC references)
    (r"\boxed{18}", "18", "numeric", None, True, "correct"),
    (r"\boxed{\$18.00}", "18", "numeric", None, True, "correct"),
    (r"\boxed{18 \text{ dollars}}", "18", "numeric", None, True, "correct"),
    (r"\boxed{1,600}", "1600", "numeric", None, True, "correct"),
    (r"\boxed{\frac{36}{2}}", "18", "numeric", None, True, "correct"),
    (r"\boxed{\frac{1}{6}}", "0.1666666667", "numeric", None, True, "correct"),
    (r"\boxed{0.16666667}", "0.1666666667", "numeric", None, True, "correct"),
    (r"\boxed{0.17}", "0.1666666667", "numeric", None, False, "wrong"),
    (r"\boxed{1450100}", "1450000", "numeric", None, False, "wrong"),
    (r"\boxed{17}", "18", "numeric", None, False, "wrong"),
    ("so it is 18", "18", "numeric", None, False, "no_answer"),
    # AQuA: letters in several forms, a boxed option value, a value that is no option
    (r"\boxed{C}", "C", "choice", AQUA_CHOICES, True, "correct"),
    (r"\boxed{\text{(C)}}", "C", "choice", AQUA_CHOICES, True, "correct"),
    (r"\boxed{(c)}", "C", "choice", AQUA_CHOICES, True, "correct"),
    (r"\boxed{36}", "C", "choice", AQUA_CHOICES, True, "correct"),
    (r"\boxed{B}", "C", "choice", AQUA_CHOICES, False, "wrong"),
    (r"\boxed{37}", "C", "choice", AQUA_CHOICES, False, "wrong"),
    ("The answer is (C)", "C", "choice", AQUA_CHOICES, False, "no_answer"),
]


def test_hand_written_responses(grader):
    tasks = [make_task(r, ref, t, ch) for r, ref, t, ch, _, _ in CASES]
    grades = grader.grade_many(tasks)
    got = [(g.correct, g.reason) for g in grades]
    want = [(c, reason) for *_, c, reason in CASES]
    bad = [(case[0], case[1], g, w) for case, g, w in zip(CASES, got, want) if g != w]
    assert not bad, bad
    assert grades[0].extracted == r"\frac{14}{3}"
    assert grades[11].extracted == "14/3"


def test_lenient_extraction_falls_back_without_box():
    opts = GradingOptions(require_box=False)
    assert grade_task(make_task("so the final answer is $\\frac{14}{3}$", r"\frac{14}{3}", "math"), opts).correct
    assert grade_task(make_task("she pays 18 dollars in total: 18.", "18", "numeric"), opts).correct
    assert grade_task(make_task("The answer is (C).", "C", "choice", AQUA_CHOICES), opts).correct
    assert grade_task(make_task("nothing here", "18", "numeric"), opts).reason == "no_answer"


def test_pathological_expression_hits_the_timeout():
    with Grader(GradingOptions(timeout_s=1.0), workers=1) as grader:
        t0 = time.monotonic()
        grade = grader.grade(PATHOLOGICAL, "7", "math")
        elapsed = time.monotonic() - t0
        assert (grade.correct, grade.reason, grade.extracted) == (False, "timeout", "9^{9^{9^{9}}}")
        assert 1.0 <= elapsed < 1.0 + 1.0, elapsed  # the in-worker timer, not the hard kill
        assert grader.hard_kills == 0
        # the worker is still usable and other answers in the same batch are unaffected
        grades = grader.grade_many([make_task(PATHOLOGICAL, "7", "math"), make_task(r"\boxed{7}", "7", "math")])
        assert [g.reason for g in grades] == ["timeout", "correct"]


def test_hard_kill_bounds_a_call_the_signal_cannot_reach():
    # with the in-worker timer off, only the parent's kill-and-respawn can end the call
    with Grader(GradingOptions(timeout_s=0.5), workers=1, hard_grace_s=0.5, soft_timeout=False) as g:
        t0 = time.monotonic()
        grade = g.grade(PATHOLOGICAL, "7", "math")
        assert time.monotonic() - t0 < 10
        assert (grade.correct, grade.reason) == (False, "timeout")
        assert grade.extracted == "9^{9^{9^{9}}}"
        assert g.hard_kills == 1
        assert g.grade(r"\boxed{7}", "7", "math").correct  # respawned worker works


def test_in_process_grader_uses_the_timer():
    with Grader(GradingOptions(timeout_s=1.0), workers=0) as g:
        assert g.grade(r"\boxed{2}", "2", "numeric").correct
        t0 = time.monotonic()
        assert g.grade(PATHOLOGICAL, "7", "math").reason == "timeout"
        assert time.monotonic() - t0 < 3


def test_bad_reference_is_reported():
    assert grade_task(make_task(r"\boxed{3}", "three", "numeric")).reason == "bad_reference"


@pytest.mark.parametrize("text,want", [
    (r"a \boxed{1} b \boxed{\frac{2}{3}} c", r"\frac{2}{3}"),
    (r"\boxed{\left\{1,2\right\}}", r"\left\{1,2\right\}"),
    (r"\boxed 5 apples", "5"),
    ("no box", None),
])
def test_last_boxed(text, want):
    assert ex.last_boxed(text) == want


def test_last_boxed_malformed_and_answer_region():
    with pytest.raises(ex.Malformed):
        ex.last_boxed(r"\boxed{\frac{1}{2}")
    assert ex.answer_region("<think>a</think>\n<answer> x </answer>") == " x "
    assert ex.answer_region("<answer>one</answer><answer>two") == "two"
    assert ex.answer_region("plain") == "plain"


@pytest.mark.parametrize("text,want", [
    ("18", 18.0), (r"\$1,600.50", 1600.5), ("25\\%", 25.0), (r"18 \text{ dollars}", 18.0), ("x = -3", -3.0),
    ("5 cm", 5.0), (r"\frac{1}{2}", None), ("1,2", None), ("3+4", None),
])
def test_to_number(text, want):
    assert ex.to_number(text) == want


def test_numbers_equal_is_exact_for_integers():
    assert ex.numbers_equal(1450000.0, 1450000)
    assert not ex.numbers_equal(1450100.0, 1450000)
    assert ex.numbers_equal(1 / 6, 0.1666666667)
    assert not ex.numbers_equal(0.17, 0.1666666667)


def test_reference_solutions_grade_correct(grader):
    """Real data: MATH500's own worked solutions (boxed) and GSM8K's (answer boxed) grade as correct."""
    import json

    from megatron_wmss.eval.benchmarks import DATA_DIR, load_benchmark

    tasks = []
    for name, limit in (("math500", 40), ("gsm8k", 20)):
        with (DATA_DIR / name / "test.jsonl").open() as fh:
            rows = [json.loads(next(fh)) for _ in range(limit)]
        for row, p in zip(rows, load_benchmark(name, limit=limit)):
            if name == "math500":
                response = row["solution"]
            else:
                work, final = row["answer"].split("####")
                response = f"<think>{work}</think>\n<answer>The answer is $\\boxed{{{final.strip()}}}$.</answer>"
            tasks.append(make_task(response, p.reference, p.answer_type))
    grades = grader.grade_many(tasks)
    assert [g.reason for g in grades] == ["correct"] * len(tasks)
