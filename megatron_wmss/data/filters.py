"""Row filters: source selection, the <think>/<answer> format, and math-verify of the boxed answer."""

from __future__ import annotations

import logging
import re
import signal
import threading

from .schema import RowError

_THINK_ANSWER = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def check_source(source: str, include: frozenset[str], exclude: frozenset[str]) -> None:
    if (include and source not in include) or source in exclude:
        raise RowError("source_filtered", f"source {source!r}")


def check_format(content: str, turn: int = 0) -> None:
    """--require-format: exactly one <think>..</think> then one <answer>..</answer>, both non-empty,
    only whitespace around them (whitespace inside and between the tags may vary, as in AM rows)."""
    counts = {tag: content.count(tag) for tag in ("<think>", "</think>", "<answer>", "</answer>")}
    if any(n != 1 for n in counts.values()):
        raise RowError("bad_format", f"assistant turn {turn}: tag counts {counts}")
    m = _THINK_ANSWER.fullmatch(content)
    if not m:
        raise RowError("bad_format", f"assistant turn {turn}: not <think>..</think> <answer>..</answer>")
    if not m.group(1).strip() or not m.group(2).strip():
        raise RowError("bad_format", f"assistant turn {turn}: empty think or answer")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces, else None."""
    for marker in ("\\boxed", "\\fbox"):
        pos = text.rfind(marker + "{")
        if pos < 0:
            continue
        depth, start = 0, pos + len(marker)
        for j in range(start, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + 1 : j]
        return None
    return None


def answer_text(info_answer: str | None, content: str) -> str:
    """The text whose \\boxed{} is checked: info.answer_content, else the <answer> block, else the content."""
    if info_answer and info_answer.strip():
        return info_answer
    m = _ANSWER_BLOCK.search(content)
    return m.group(1) if m else content


class _Timeout(BaseException):
    """BaseException so math-verify's own `except Exception` blocks cannot swallow it."""


def _on_alarm(signum, frame):
    raise _Timeout()


class AnswerVerifier:
    """math-verify of a boxed answer against a reference, with a per-row wall-clock timeout (SIGALRM:
    must run in the main thread of its process, as the preprocess workers and the 1-worker path do)."""

    def __init__(self, timeout_s: float = 5.0):
        import math_verify

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: we time out here
        self._mv = math_verify
        self.timeout_s = float(timeout_s)

    def check(self, reference: str | None, text: str) -> None:
        if reference is None or not str(reference).strip():
            raise RowError("no_reference_answer")
        boxed = last_boxed(text)
        if boxed is None or not boxed.strip():
            raise RowError("no_boxed_answer")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("AnswerVerifier.check must run in the main thread (SIGALRM timeout)")
        gold_src = reference if "$" in reference or "\\boxed" in reference else f"${reference}$"
        old = signal.signal(signal.SIGALRM, _on_alarm)
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                gold = self._mv.parse(gold_src, parsing_timeout=None)
                pred = self._mv.parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=None)
                ok = bool(gold) and bool(pred) and self._mv.verify(gold, pred, timeout_seconds=None)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            raise RowError("verify_timeout", f"more than {self.timeout_s:g}s") from None
        finally:
            signal.signal(signal.SIGALRM, old)
        if not gold or not pred:
            raise RowError("answer_unparseable", f"{'reference' if not gold else 'boxed answer'} did not parse")
        if not ok:
            raise RowError("answer_mismatch", f"boxed {boxed[:60]!r} vs reference {reference[:60]!r}")
