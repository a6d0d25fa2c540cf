"""Stage I data selection: final-answer consistency between weak data and ICL data.

For each question both sources have one or more solutions (weak data: the weak model's; ICL data: the
strong model's, prompted with weak demonstrations). A source's answer to a question is the majority final
answer of its solutions (answers.majority; none on a tie or when no solution has an answer). A question
is kept when both sources have an answer and the two are the same; no gold answer is used. The kept
solutions (the first solution of a source at its answer) become chat rows for SFT:

  weak    the weak solution of each kept question
  icl     the ICL solution of each kept question
  hybrid  both (two rows per kept question)
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_wmss.errors import ConfigError
from megatron_wmss.w2s.answers import SameFn, final_answer, majority, math_verify_same
from megatron_wmss.w2s.config import VARIANTS


@dataclass
class Verdict:
    """Why a question was kept or not: reason is "consistent", "inconsistent", "no_answer" (a source has no
    answer at all), "tie" (a source's answers tie) or "missing" (a source has no row for it)."""

    kept: bool
    reason: str
    weak_solution: str | None = None
    icl_solution: str | None = None
    answer: str | None = None


def source_answer(solutions: list[str], same: SameFn) -> tuple[str | None, str | None, str]:
    """(answer, first solution reaching it, reason) of one source's solutions to a question."""
    answers = [final_answer(s) for s in solutions]
    if all(a is None for a in answers):
        return None, None, "no_answer"
    top = majority(answers, same)
    if top is None:
        return None, None, "tie"
    first = top[0][0]
    return answers[first], solutions[first], "ok"


def check_question(weak: list[str], icl: list[str], same: SameFn = math_verify_same) -> Verdict:
    """The consistency verdict of one question from its weak and ICL solutions."""
    if not weak or not icl:
        return Verdict(False, "missing")
    weak_answer, weak_solution, why_weak = source_answer(weak, same)
    icl_answer, icl_solution, why_icl = source_answer(icl, same)
    for why in (why_weak, why_icl):
        if why != "ok":
            return Verdict(False, why)
    if not same(weak_answer, icl_answer):
        return Verdict(False, "inconsistent")
    return Verdict(True, "consistent", weak_solution, icl_solution, weak_answer)


def filter_rows(weak_rows: dict[str, dict], icl_rows: dict[str, dict], variant: str,
                same: SameFn = math_verify_same) -> tuple[list[dict], dict[str, int]]:
    """(SFT chat rows of the kept questions for `variant`, count of questions per verdict reason); the
    questions are those of the weak data, in its order. A row: {"id", "messages", "info"}, ready for
    `wmss preprocess --input-format messages`."""
    if variant not in VARIANTS:
        raise ConfigError(f"--variant: one of {', '.join(VARIANTS)}, got {variant!r}")
    rows, counts = [], {}
    for qid, weak in weak_rows.items():
        icl = icl_rows.get(qid)
        verdict = check_question(weak["samples"], icl["samples"] if icl else [], same)
        counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
        if not verdict.kept:
            continue
        chosen = {"weak": [("weak", verdict.weak_solution)], "icl": [("icl", verdict.icl_solution)],
                  "hybrid": [("weak", verdict.weak_solution), ("icl", verdict.icl_solution)]}[variant]
        for source, solution in chosen:
            rows.append({"id": f"{qid}/{source}", "messages": weak["prompt"] + [{"role": "assistant", "content": solution}],
                         "info": {"source": f"w2s_{source}", "answer": verdict.answer}})
    return rows, counts


def all_weak_rows(weak_rows: dict[str, dict]) -> list[dict]:
    """SFT chat rows of every weak solution, unfiltered: the data of the full-weak-FT baseline."""
    return [{"id": f"{qid}/weak{i}", "messages": row["prompt"] + [{"role": "assistant", "content": solution}],
             "info": {"source": "w2s_weak_all"}}
            for qid, row in weak_rows.items() for i, solution in enumerate(row["samples"])]
