"""Grade responses against reference answers with math-verify, every call under a timeout.

Rules (see docs/eval.md):
  * the answer region is the last `<answer>...</answer>` block if present, else the whole response;
  * the prediction is the last `\\boxed{}` in that region (strict, default); with
    `require_box=False` an unboxed region falls back to math-verify's own anchors / the last number /
    'answer is (X)';
  * "math": math-verify `verify(gold, pred)`; "numeric": plain-number comparison with tolerance, then
    math-verify; "choice": a letter A-E, or a boxed value equal to exactly one option's text.

A response that cannot be graded is wrong and says why in `reason`: no_answer (no box / empty),
unparsable (malformed LaTeX), timeout, bad_reference (the reference itself does not parse), error.

Timeouts: math-verify 0.9's own `parsing_timeout`/`timeout_seconds` use `signal.alarm` (whole seconds,
main thread only, per parse/compare call so several add up, and a timeout is silently returned as
"not equal"). We switch them off and instead (1) run each grading call in a worker process under one
`setitimer` budget that covers extraction, parsing and comparison together, and (2) kill and restart
the worker if it is still busy `hard_grace_s` after that budget (C code that never returns to the
interpreter cannot be interrupted by a signal).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from pathlib import Path
from typing import Iterable, Sequence

from megatron_wmss.eval import extraction as ex

REASONS = ("correct", "wrong", "no_answer", "unparsable", "timeout", "bad_reference", "error")


@dataclass(frozen=True)
class GradingOptions:
    timeout_s: float = 5.0  # budget of one grading call
    require_box: bool = True  # strict \boxed{} extraction (paper); False = lenient fallbacks
    numeric_rel_tol: float = 1e-4  # non-integer numeric references (MAWPS/SVAMP store 10 decimals)


@dataclass
class Grade:
    correct: bool
    reason: str
    extracted: str | None = None


@dataclass(frozen=True)
class GradeTask:
    response: str
    reference: str
    answer_type: str
    choices: tuple[tuple[str, str], ...] = ()  # (letter, option text) pairs, AQuA only


class GradeTimeout(BaseException):
    """Raised by the timer; a BaseException so math-verify's `except Exception` does not swallow it."""


# ---------------------------------------------------------------------------------------- grading logic
def extract(task: GradeTask, options: GradingOptions) -> tuple[str | None, Grade | None]:
    """(extracted answer, final Grade if extraction already decides it)."""
    region = ex.answer_region(task.response)
    try:
        boxed = ex.last_boxed(region)
    except ex.Malformed:
        return None, Grade(False, "unparsable", None)
    if boxed is not None:
        return boxed, (Grade(False, "no_answer", boxed) if not boxed.strip() else None)
    if options.require_box or not region.strip():
        return None, Grade(False, "no_answer", None)
    return None, None  # lenient: judge() searches the region itself


def grade_task(task: GradeTask, options: GradingOptions = GradingOptions()) -> Grade:
    """Grade one response (no time limit of its own: call it through `Grader`)."""
    if task.answer_type not in ("math", "numeric", "choice"):
        raise ValueError(f"unknown answer_type {task.answer_type!r}")
    extracted, early = extract(task, options)
    if early is not None:
        return early
    try:
        if task.answer_type == "choice":
            return _judge_choice(task, extracted, options)
        if task.answer_type == "numeric":
            return _judge_numeric(task, extracted, options)
        return _judge_math(task, extracted)
    except GradeTimeout:
        return Grade(False, "timeout", extracted)


def _mv():
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices: we bound it ourselves
    return math_verify


@lru_cache(maxsize=4096)
def _parse_boxed(text: str) -> tuple:
    mv = _mv()
    cfg = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    return tuple(mv.parse("\\boxed{" + text + "}", cfg, parsing_timeout=None))


def _parse_free(text: str) -> list:
    """Lenient: math-verify's default anchors ('final answer is', last LaTeX, last expression)."""
    mv = _mv()
    return mv.parse(text, [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()], parsing_timeout=None)


def _is_expr(obj) -> bool:
    return not isinstance(obj, str)


def _shown(parsed, fallback: str | None) -> str | None:
    strings = [p for p in parsed if isinstance(p, str)]
    return fallback if fallback is not None else (strings[-1] if strings else None)


def _verify(gold: Sequence, pred: Sequence) -> bool:
    return bool(_mv().verify(list(gold), list(pred), timeout_seconds=None))


def _judge_math(task: GradeTask, extracted: str | None) -> Grade:
    gold = _parse_boxed(task.reference.strip())
    if not gold:
        return Grade(False, "bad_reference", extracted)
    pred = _parse_boxed(extracted) if extracted is not None else _parse_free(ex.answer_region(task.response))
    shown = _shown(pred, extracted)
    if not pred:
        return Grade(False, "unparsable" if extracted is not None else "no_answer", shown)
    if _verify(gold, pred):
        return Grade(True, "correct", shown)
    return Grade(False, "wrong" if any(_is_expr(p) for p in pred) else "unparsable", shown)


def _judge_numeric(task: GradeTask, extracted: str | None, options: GradingOptions) -> Grade:
    gold = ex.to_number(task.reference)
    if gold is None:
        return Grade(False, "bad_reference", extracted)
    if extracted is None:  # lenient, unboxed
        num = ex.last_number(ex.answer_region(task.response))
        if num is None:
            return Grade(False, "no_answer", None)
        ok = ex.numbers_equal(num, gold, options.numeric_rel_tol)
        return Grade(ok, "correct" if ok else "wrong", f"{num:g}")
    num = ex.to_number(extracted)
    if num is not None:
        ok = ex.numbers_equal(num, gold, options.numeric_rel_tol)
        return Grade(ok, "correct" if ok else "wrong", extracted)
    return _judge_math(task, extracted)  # \frac{7}{2}, 2^{10}, 3\sqrt{4} ...


def _judge_choice(task: GradeTask, extracted: str | None, options: GradingOptions) -> Grade:
    gold = task.reference.strip().upper()
    if extracted is None:  # lenient, unboxed
        letter = ex.choice_in_text(ex.answer_region(task.response))
        if letter is None:
            return Grade(False, "no_answer", None)
        return Grade(letter == gold, "correct" if letter == gold else "wrong", letter)
    letter = ex.choice_letter(extracted) or _option_matching(extracted, dict(task.choices), options)
    if letter is None:  # a value that is no (or more than one) option
        return Grade(False, "wrong", extracted)
    return Grade(letter == gold, "correct" if letter == gold else "wrong", extracted)


def _norm(s: str) -> str:
    return "".join(s.lower().split()).replace("$", "").rstrip(".")


def _option_matching(value: str, choices: dict[str, str], options: GradingOptions) -> str | None:
    """The option whose text equals the boxed value: compared as text, then as a number, then with
    math-verify; the first comparison that singles out exactly one option decides (else None)."""
    num = ex.to_number(value)

    def same_number(text: str) -> bool:
        opt = ex.to_number(text)
        return num is not None and opt is not None and ex.numbers_equal(num, opt, options.numeric_rel_tol)

    def same_math(text: str) -> bool:
        opt = _parse_boxed(text)
        return any(_is_expr(o) for o in opt) and _verify(opt, _parse_boxed(value))

    for same in (lambda t: _norm(t) == _norm(value), same_number, same_math):
        hits = [letter for letter, text in choices.items() if same(text)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            return None  # ambiguous
    return None


# ---------------------------------------------------------------------------------------- time limits
def _on_alarm(signum, frame):
    raise GradeTimeout()


def grade_with_timer(task: GradeTask, options: GradingOptions) -> Grade:
    """`grade_task` under a SIGALRM interval timer (main thread of its process only)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, options.timeout_s)
            return grade_task(task, options)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except GradeTimeout:  # fired outside grade_task's own handler (e.g. during extraction)
        return Grade(False, "timeout", None)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _warm_up() -> None:
    for response, reference, answer_type in ((r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", "math"),
                                             (r"\boxed{[1,2)}", "[1,2)", "math"),
                                             (r"\boxed{\frac{1}{2}}", "0.5", "numeric")):
        grade_task(GradeTask(response, reference, answer_type))


def worker_loop(conn_in, conn_out, options: GradingOptions, soft_timeout: bool) -> None:
    """Body of a grading worker process (see `megatron_wmss.eval.worker`)."""
    _warm_up()  # imports and first-use parser setup (~1 s) happen before the first task's clock starts
    conn_out.send("ready")
    while True:
        msg = conn_in.recv()
        if msg is None:
            return
        idx, task = msg
        try:
            grade = grade_with_timer(task, options) if soft_timeout else grade_task(task, options)
        except Exception as err:  # a bug or an odd input must not kill the pool
            print(f"wmss eval: grading error ({type(err).__name__}: {str(err)[:200]})", file=sys.stderr)
            grade = Grade(False, "error", None)
        conn_out.send((idx, asdict(grade)))


class _Worker:
    """A fresh interpreter (`python -m megatron_wmss.eval.worker`) talking over two inherited pipes.

    A plain subprocess rather than multiprocessing: no re-import of the caller's __main__, and safe to
    start from a process that already holds CUDA/vLLM state."""

    def __init__(self, options: GradingOptions, soft_timeout: bool, startup_timeout_s: float = 120):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # works from a source checkout too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        args = json.dumps({"options": asdict(options), "soft_timeout": soft_timeout})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "megatron_wmss.eval.worker", str(to_child_r), str(from_child_w), args],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, env=env)
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.startup_timeout_s = startup_timeout_s

    def wait_ready(self) -> None:
        try:
            ok = self.conn.poll(self.startup_timeout_s) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ok = False
        if not ok:
            self.kill()
            raise RuntimeError("grading worker did not start (see its error above: math-verify missing?)")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.send_conn.close()
        self.conn.close()


class Grader:
    """A pool of grading worker processes; use as a context manager (or call close()).

    `workers=0` grades in this process under the interval timer only (main thread, no hard kill).
    `soft_timeout=False` leaves only the hard kill (used by the tests to exercise it).
    """

    def __init__(self, options: GradingOptions = GradingOptions(), workers: int = 1,
                 hard_grace_s: float | None = None, soft_timeout: bool = True):
        self.options = options
        self.hard_timeout_s = options.timeout_s + (hard_grace_s if hard_grace_s is not None
                                                   else min(max(1.0, options.timeout_s), 10.0))
        self.soft_timeout = soft_timeout
        self._workers: list[_Worker] = []
        try:
            self._workers = [_Worker(options, soft_timeout) for _ in range(max(0, workers))]
            for w in self._workers:
                w.wait_ready()
        except BaseException:
            self.close()
            raise
        self.hard_kills = 0

    def _respawn(self, old: _Worker) -> _Worker:
        old.kill()
        new = _Worker(self.options, self.soft_timeout)
        self._workers[self._workers.index(old)] = new
        new.wait_ready()
        return new

    def grade(self, response: str, reference: str, answer_type: str, choices: dict | None = None) -> Grade:
        return self.grade_many([make_task(response, reference, answer_type, choices)])[0]

    def grade_many(self, tasks: Iterable[GradeTask], progress=None) -> list[Grade]:
        """Grade all tasks (order kept); `progress` is an optional tqdm bar updated per task."""
        tasks = list(tasks)
        if not self._workers:
            return [self._grade_here(t, progress) for t in tasks]
        results: list[Grade | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        busy: dict[_Worker, tuple[int, float]] = {}
        while pending or busy:
            for w in list(self._workers):
                if w not in busy and pending:
                    idx = pending.popleft()
                    try:
                        w.send_conn.send((idx, tasks[idx]))
                    except OSError:  # worker died while idle: replace it and retry
                        w = self._respawn(w)
                        w.send_conn.send((idx, tasks[idx]))
                    busy[w] = (idx, time.monotonic() + self.hard_timeout_s)
            next_deadline = min(d for _, d in busy.values())
            ready = wait_connections([w.conn for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for w in [w for w in list(busy) if w.conn in ready]:
                idx = busy.pop(w)[0]
                try:
                    got_idx, grade = w.conn.recv()
                    results[got_idx] = Grade(**grade)
                except (EOFError, OSError):  # worker died (e.g. out of memory)
                    results[idx] = Grade(False, "error", _extracted_or_none(tasks[idx], self.options))
                    self._respawn(w)
                if progress is not None:
                    progress.update(1)
            now = time.monotonic()
            for w, (idx, deadline) in list(busy.items()):
                if now >= deadline:  # stuck where a signal cannot reach it: kill and replace the worker
                    busy.pop(w)
                    self.hard_kills += 1
                    results[idx] = Grade(False, "timeout", _extracted_or_none(tasks[idx], self.options))
                    self._respawn(w)
                    if progress is not None:
                        progress.update(1)
        return results  # type: ignore[return-value]

    def _grade_here(self, task: GradeTask, progress) -> Grade:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Grader(workers=0) needs the main thread (SIGALRM); use workers>=1")
        grade = grade_with_timer(task, self.options)
        if progress is not None:
            progress.update(1)
        return grade

    def close(self) -> None:
        for w in self._workers:
            try:
                w.send_conn.send(None)
                w.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            w.kill()
        self._workers = []

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_task(response: str, reference: str, answer_type: str, choices: dict | None = None) -> GradeTask:
    return GradeTask(response, str(reference), answer_type, tuple(sorted((choices or {}).items())))


def _extracted_or_none(task: GradeTask, options: GradingOptions) -> str | None:
    try:
        return extract(task, options)[0]
    except Exception:
        return None
