"""Run a study's jobs: production `wmss` subcommands as subprocesses, with dependencies, resume and
failure isolation.

Each job is a list of commands (or a Python function) plus a completion check. A job whose check
passes is skipped (resume); a failed job does not stop the study: it is recorded with the tail of its
log, and only the jobs that depend on it are skipped. Up to `max_parallel` jobs run at once (on CPU
two single-threaded jobs finish sooner than one two-threaded job: the tiny models do not parallelise
well inside one process).

Why not a workflow library: the needs are a dozen lines of scheduling (dependencies, a process pool,
a log per job), and subprocess isolation is the point: a crashed or hung arm cannot take the study's
process, or another arm, with it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


@dataclass
class Job:
    name: str
    is_done: Callable[[], bool]
    commands: Optional[Callable[[], list[list[str]]]] = None  # built when the job starts
    function: Optional[Callable[[], None]] = None  # in-process work (small file writing only)
    deps: tuple = ()
    after: Optional[Callable[[], None]] = None  # runs when the commands succeeded (e.g. write a marker)
    alone: bool = False  # nothing else can run beside it (every later job needs it): it gets every core


@dataclass
class _Running:
    job: Job
    queue: list
    log_path: Path
    started: float
    proc: subprocess.Popen = None
    log: object = None


@dataclass
class Outcome:
    status: dict = field(default_factory=dict)  # job name -> done / failed / skipped
    errors: dict = field(default_factory=dict)  # job name -> message (failed and skipped jobs)
    seconds: dict = field(default_factory=dict)  # job name -> wall seconds (jobs run in this invocation)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class JobRunner:
    def __init__(self, log_dir: Path, *, max_parallel: int = 1, env: dict | None = None, say=print):
        self.log_dir, self.max_parallel, self.say = Path(log_dir), max(1, max_parallel), say
        self.env = dict(os.environ if env is None else env)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _start_next_command(self, run: _Running) -> None:
        cmd = run.queue.pop(0)
        run.log.write(f"$ {shlex.join(cmd)}\n")
        run.log.flush()
        env = self.env
        if run.job.alone:
            env = dict(env, OMP_NUM_THREADS=str(os.cpu_count() or 1))
        run.proc = subprocess.Popen(cmd, stdout=run.log, stderr=subprocess.STDOUT, env=env)

    def _start(self, job: Job, outcome: Outcome, running: dict) -> None:
        started = time.monotonic()
        if job.function is not None:
            try:
                job.function()
            except Exception as err:  # recorded, not raised: the other arms go on
                outcome.status[job.name], outcome.errors[job.name] = FAILED, f"{type(err).__name__}: {err}"
                self.say(f"FAILED {job.name}: {err}")
                return
            outcome.status[job.name], outcome.seconds[job.name] = DONE, time.monotonic() - started
            return
        log_path = self.log_dir / f"{job.name.replace('/', '_')}.log"
        run = _Running(job, list(job.commands()), log_path, started, log=log_path.open("a"))
        self.say(f"start {job.name}")
        self._start_next_command(run)
        running[job.name] = run

    def _poll(self, run: _Running, outcome: Outcome) -> bool:
        """Advance one running job; True when it has finished (either way)."""
        code = run.proc.poll()
        if code is None:
            return False
        if code == 0 and run.queue:
            self._start_next_command(run)
            return False
        run.log.close()
        name = run.job.name
        if code == 0:
            if run.job.after is not None:
                run.job.after()
            outcome.status[name], outcome.seconds[name] = DONE, time.monotonic() - run.started
            self.say(f"done {name} ({outcome.seconds[name]:.0f} s)")
        else:
            outcome.status[name] = FAILED
            outcome.errors[name] = f"exit code {code}; log {run.log_path}:\n{_tail(run.log_path)}"
            self.say(f"FAILED {name} (exit code {code}); log: {run.log_path}")
        return True

    def run(self, jobs: list[Job]) -> Outcome:
        outcome, pending, running = Outcome(), list(jobs), {}
        names = {job.name for job in jobs}
        try:
            while pending or running:
                for job in list(pending):
                    deps = [d for d in job.deps if d in names]
                    if any(outcome.status.get(d) in (FAILED, SKIPPED) for d in deps):
                        pending.remove(job)
                        outcome.status[job.name] = SKIPPED
                        outcome.errors[job.name] = "skipped: " + ", ".join(
                            d for d in deps if outcome.status.get(d) in (FAILED, SKIPPED)) + " did not finish"
                        continue
                    if any(outcome.status.get(d) != DONE for d in deps):
                        continue
                    if job.is_done():
                        pending.remove(job)
                        outcome.status[job.name] = DONE
                        continue
                    if len(running) < self.max_parallel:
                        pending.remove(job)
                        self._start(job, outcome, running)
                for name in [n for n, run in running.items() if self._poll(run, outcome)]:
                    del running[name]
                if running:
                    time.sleep(0.2)
        except BaseException:
            for run in running.values():
                run.proc.terminate()
            for run in running.values():
                try:
                    run.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
            raise
        return outcome
