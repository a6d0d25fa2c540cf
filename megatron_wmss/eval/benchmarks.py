"""The paper's seven math benchmarks (App. E.1), read from the copies bundled in `benchmarks_data/`.

Each loader maps one raw row to a `Problem`: a stable id, the user-turn text, the reference answer and
how to grade it (`answer_type`: "math" = math-verify against a LaTeX reference, "numeric" = number with
tolerance (math-verify as a fallback), "choice" = a letter A-E). Provenance/licenses: the README.txt next
to each test.jsonl.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DATA_DIR = Path(__file__).resolve().parent / "benchmarks_data"
ANSWER_TYPES = ("math", "numeric", "choice")


@dataclass(frozen=True)
class Problem:
    """One benchmark item. `choices` maps letter -> option text (AQuA only)."""

    id: str
    problem: str
    reference: str
    answer_type: str
    choices: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A bundled benchmark: its loader, expected row count and default generation budget."""

    name: str
    loader: Callable[[list[dict]], list[Problem]]
    rows: int
    max_new_tokens: int  # paper's limits: 4,096 new tokens, 8,192 for AIME/AMC


def _number(value) -> str:
    """Reference number as text: 27.0 -> '27', 0.1666666667 -> '0.1666666667', '1,600' -> '1600'."""
    text = str(value).strip().replace(",", "")
    num = float(text)
    return str(int(num)) if num.is_integer() else text


def _math500(rows):
    return [Problem(r["unique_id"], r["problem"], r["answer"], "math") for r in rows]


def _gsm8k(rows):
    return [Problem(f"gsm8k-{i}", r["question"], _number(r["answer"].split("####")[-1]), "numeric")
            for i, r in enumerate(rows)]


def _aime25(rows):
    # rows 1-15 are AIME 2025 I, rows 16-30 AIME 2025 II (see README.txt)
    return [Problem(f"aime25-{'I' if i < 15 else 'II'}-{i % 15 + 1}", r["problem"], _number(r["answer"]), "numeric")
            for i, r in enumerate(rows)]


def _amc23(rows):
    return [Problem(f"amc23-{r['id']}", r["problem"], _number(r["answer"]), "numeric") for r in rows]


def _svamp(rows):
    out = []
    for r in rows:
        body = r["Body"].strip()
        if not body.endswith((".", "?", "!")):
            body += "."
        out.append(Problem(f"svamp-{r['ID']}", f"{body} {r['Question'].strip()}", _number(r["Answer"]), "numeric"))
    return out


def _mawps(rows):
    return [Problem(f"mawps-{r['idx']}", r["input"].strip(), _number(r["target"]), "numeric") for r in rows]


_OPTION = re.compile(r"^\s*\(?([A-E])\)\s*(.*)$", re.S)


def _aqua(rows):
    out = []
    for i, r in enumerate(rows):
        choices = {}
        for opt in r["options"]:
            m = _OPTION.match(opt)
            if not m:
                raise ValueError(f"aqua row {i}: option {opt!r} is not of the form 'A)text'")
            choices[m.group(1)] = m.group(2).strip()
        listing = " ".join(f"({k}) {v}" for k, v in choices.items())
        out.append(Problem(f"aqua-{i}", f"{r['question'].strip()}\nAnswer Choices: {listing}",
                           r["correct"].strip().upper(), "choice", choices))
    return out


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("aime25", _aime25, 30, 8192),
    Benchmark("math500", _math500, 500, 4096),
    Benchmark("amc23", _amc23, 40, 8192),
    Benchmark("aqua", _aqua, 254, 4096),
    Benchmark("gsm8k", _gsm8k, 1319, 4096),
    Benchmark("mawps", _mawps, 2065, 4096),
    Benchmark("svamp", _svamp, 1000, 4096),
]}  # order = the paper's Table 1 columns
ALIASES = {"aime2025": "aime25", "aime": "aime25", "amc": "amc23", "math": "math500"}


def resolve_names(spec: str | list[str]) -> list[str]:
    """'all' or a comma-separated list (aliases allowed) -> canonical benchmark names, in given order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (s.strip().lower() for s in items):
        if not item:
            continue
        if item == "all":
            names.extend(n for n in BENCHMARKS if n not in names)
            continue
        name = ALIASES.get(item, item)
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {item!r} in --benchmarks; choose from: all, {', '.join(BENCHMARKS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("--benchmarks selects no benchmark")
    return names


def load_benchmark(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """Load `<data_dir>/<name>/test.jsonl` (bundled copy by default) as Problems, first `limit` rows."""
    bench = BENCHMARKS[resolve_names(name)[0]]
    path = Path(data_dir or DATA_DIR) / bench.name / "test.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found (is the package data installed?)")
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    problems = bench.loader(rows)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate problem ids")
    return problems[:limit] if limit else problems


# ---------------------------------------------------------------------------------------------------
# User-supplied benchmarks: `wmss eval --benchmark-file [NAME=]PATH`

CUSTOM_MAX_NEW_TOKENS = 4096  # the paper's default limit; --max-new-tokens overrides it
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class BenchmarkFile:
    """A JSONL benchmark given on the command line: its name (file stem unless NAME=PATH) and path."""

    name: str
    path: Path

    @classmethod
    def parse(cls, spec: str) -> "BenchmarkFile":
        name, sep, path = spec.partition("=")
        if not sep or "/" in name or not _NAME.match(name):  # no NAME= prefix (or '=' inside the path)
            name, path = "", spec
        path_ = Path(path).expanduser()
        name = name or path_.name.split(".")[0]
        if not _NAME.match(name):
            raise ValueError(f"--benchmark-file {spec!r}: cannot make a benchmark name of {name!r}; "
                             "use NAME=PATH with letters, digits, '_', '-', '.'")
        if name.lower() in BENCHMARKS or name.lower() in ALIASES or name.lower() == "all":
            raise ValueError(f"--benchmark-file {spec!r}: the name {name!r} is a bundled benchmark; use NAME=PATH")
        return cls(name, path_)


def _custom_row(row: dict, where: str, name: str, index: int) -> Problem:
    """One row of a benchmark file -> Problem (see load_benchmark_file)."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if "messages" in row:  # AM-schema / chat row: first user turn, reference_answer from its info
        msgs = row["messages"]
        user = next((m for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None) \
            if isinstance(msgs, list) else None
        if user is None or not isinstance(user.get("content"), str):
            raise ValueError(f"{where}: 'messages' has no user turn with string content")
        problem = user["content"]
        answer = row.get("answer")
        for m in (user, *[m for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]):
            info = m.get("info") if isinstance(m.get("info"), dict) else {}
            if answer is None and info.get("reference_answer") is not None:
                answer = info["reference_answer"]
    else:
        problem = row.get("problem", row.get("question"))
        answer = row.get("answer")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: no 'problem' (or 'question', or a user turn in 'messages') text")
    if answer is None or isinstance(answer, (bool, dict, list)) or not str(answer).strip():
        raise ValueError(f"{where}: no 'answer' (or info.reference_answer)")
    answer = str(answer).strip()
    choices = row.get("choices") or {}
    if not isinstance(choices, dict) or not all(isinstance(v, str) for v in choices.values()):
        raise ValueError(f"{where}: 'choices' must map letters to option texts")
    answer_type = row.get("answer_type") or ("choice" if choices else
                                             "numeric" if _PLAIN_NUMBER.match(answer.replace(",", "")) else "math")
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"{where}: answer_type {answer_type!r} is not one of {', '.join(ANSWER_TYPES)}")
    if answer_type == "numeric":
        try:
            answer = _number(answer)
        except ValueError:
            raise ValueError(f"{where}: answer_type numeric but answer {answer!r} is not a number") from None
    if answer_type == "choice" and answer.upper() not in choices:
        raise ValueError(f"{where}: answer {answer!r} is not one of the choices {sorted(choices)}")
    row_id = row.get("id", f"{name}-{index}")
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)) or not str(row_id):
        raise ValueError(f"{where}: 'id' must be a non-empty string or integer")
    return Problem(str(row_id), problem, answer.upper() if answer_type == "choice" else answer, answer_type,
                   {k.upper(): v for k, v in choices.items()})


def load_benchmark_file(spec: "str | BenchmarkFile", limit: int | None = None) -> list[Problem]:
    """Problems of a user-supplied JSONL benchmark, first `limit` rows. One JSON object per line, either

    * `{"id"?, "problem" (or "question"), "answer", "answer_type"?, "choices"?}`, or
    * a chat row as `wmss preprocess` reads it (`{"id"?, "messages": [...]}`, e.g. AM schema): the first
      user turn is the problem, `info.reference_answer` (user's, else assistant's) the reference.

    `answer_type` is "numeric" (plain number, compared exactly or within --numeric-rel-tol), "math"
    (math-verify) or "choice" (letter, with `choices` {"A": text, ...}); by default numeric when the
    answer is a plain number, choice when `choices` is given, else math. Ids default to `<name>-<row>`
    and must be unique. Blank lines are skipped.
    """
    bench = spec if isinstance(spec, BenchmarkFile) else BenchmarkFile.parse(spec)
    if not bench.path.is_file():
        raise FileNotFoundError(f"--benchmark-file {bench.path}: file not found")
    problems: list[Problem] = []
    with bench.path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{bench.path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not JSON ({err.msg})") from None
            problems.append(_custom_row(row, where, bench.name, len(problems)))
    if not problems:
        raise ValueError(f"--benchmark-file {bench.path}: no rows")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"--benchmark-file {bench.path}: duplicate problem id {dup!r}")
    return problems[:limit] if limit else problems
