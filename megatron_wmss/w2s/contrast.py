"""Stage II contrastive pairs from the improved strong model's (M_plus) samples and the weak model's.

For each question, M_plus's confidence is the share of its samples that reach the majority final answer
(answers.majority; a tie or no answer gives no majority and no pair). On questions with confidence at
least `min_confidence`, one pair: chosen = the first M_plus sample at the majority answer, rejected = the
first weak solution whose final answer differs from it (weak solutions without an answer are not used:
they do not state a different answer). No gold answer is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_wmss.errors import ConfigError
from megatron_wmss.w2s.answers import SameFn, final_answer, majority, math_verify_same


@dataclass
class PairVerdict:
    """reason: "pair", "no_majority", "not_confident", "no_contrast" (no weak solution with a different
    answer) or "missing" (no weak row for the question)."""

    reason: str
    confidence: float = 0.0
    chosen: str | None = None
    rejected: str | None = None
    answer: str | None = None
    rejected_answer: str | None = None


def build_pair(strong: list[str], weak: list[str], min_confidence: float,
               same: SameFn = math_verify_same) -> PairVerdict:
    """The pair of one question from M_plus's samples `strong` and the weak model's solutions `weak`."""
    if not weak:
        return PairVerdict("missing")
    answers = [final_answer(s) for s in strong]
    top = majority(answers, same) if strong else None
    if top is None:
        return PairVerdict("no_majority")
    members, confidence = top
    answer = answers[members[0]]
    if confidence < min_confidence:
        return PairVerdict("not_confident", confidence, answer=answer)
    for solution in weak:
        other = final_answer(solution)
        if other is not None and not same(answer, other):
            return PairVerdict("pair", confidence, strong[members[0]], solution, answer, other)
    return PairVerdict("no_contrast", confidence, answer=answer)


def pair_rows(strong_rows: dict[str, dict], weak_rows: dict[str, dict], min_confidence: float,
              same: SameFn = math_verify_same) -> tuple[list[dict], dict[str, int]]:
    """(pair rows for `wmss preprocess --input-format pairs`, count of questions per reason), in the
    order of `strong_rows`."""
    if not 0.0 < min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence: must be in (0, 1], got {min_confidence}")
    rows, counts = [], {}
    for qid, strong in strong_rows.items():
        weak = weak_rows.get(qid)
        verdict = build_pair(strong["samples"], weak["samples"] if weak else [], min_confidence, same)
        counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
        if verdict.reason == "pair":
            rows.append({"id": qid, "prompt": strong["prompt"], "chosen": verdict.chosen, "rejected": verdict.rejected,
                         "info": {"source": "w2s_pairs", "confidence": verdict.confidence, "answer": verdict.answer,
                                  "rejected_answer": verdict.rejected_answer}})
    return rows, counts
