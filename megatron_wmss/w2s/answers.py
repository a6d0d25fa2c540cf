"""Final answers of solutions and their comparison with each other (math-verify), never against gold.

The final answer of a solution is the last `\\boxed{}` of its answer region (the `<answer>` block if any,
else the whole text), as `wmss eval` grades; a solution without one (or with an empty or unbalanced box)
has no answer. Two answers are the same when they are equal as strings or math-verify finds them
equivalent (`\\frac{1}{2}` and `0.5`).
"""

from __future__ import annotations

from typing import Callable, Sequence

from megatron_wmss.eval import extraction as ex

SameFn = Callable[[str, str], bool]


def final_answer(solution: str) -> str | None:
    """The last boxed answer of `solution`, stripped; None when there is none."""
    try:
        boxed = ex.last_boxed(ex.answer_region(solution))
    except ex.Malformed:
        return None
    if boxed is None or not boxed.strip():
        return None
    return boxed.strip()


def math_verify_same(a: str, b: str) -> bool:
    """Whether answers `a` and `b` are equivalent by math-verify (string equality first; the check runs
    under the grading timeout of `wmss eval`, a timeout counting as different)."""
    if a == b:
        return True
    from megatron_wmss.eval.grading import GradingOptions, grade_with_timer, make_task

    return grade_with_timer(make_task(f"\\boxed{{{b}}}", a, "math"), GradingOptions()).correct


def answer_classes(answers: Sequence[str | None], same: SameFn = math_verify_same) -> list[list[int]]:
    """Indices of `answers` grouped into classes of the same answer (each compared with the first member
    of every class so far), in order of first appearance; None answers belong to no class."""
    classes: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        home = next((c for c in classes if same(answers[c[0]], answer)), None)
        if home is None:
            classes.append([i])
        else:
            home.append(i)
    return classes


def majority(answers: Sequence[str | None], same: SameFn = math_verify_same) -> tuple[list[int], float] | None:
    """(indices of the samples at the majority answer, confidence = their share of ALL samples), or None
    when no sample has an answer or two answers tie for the most samples."""
    classes = sorted(answer_classes(answers, same), key=len, reverse=True)
    if not classes or (len(classes) > 1 and len(classes[0]) == len(classes[1])):
        return None
    return classes[0], len(classes[0]) / len(answers)
