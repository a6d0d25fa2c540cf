"""Evaluation outputs: per-sample JSONL (also the resume state), run fingerprint, summary JSON, markdown
table and the `--compare A B` delta table.

Layout of an output directory:
  run_config.json            what produced the samples (model, prompts, sampling, grading); checked on resume
  samples/<benchmark>.jsonl  one line per sample: benchmark, id, sample, prompt, response, extracted,
                             correct, reason, reference, finish_reason, num_tokens
  summary.json, summary.md   metrics recomputed from the sample files
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from megatron_wmss.eval.benchmarks import BENCHMARKS

CONFIG_FILE = "run_config.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
# run_config entries that must match for existing samples to be reused
FINGERPRINT_KEYS = ("model", "prompt", "sampling", "max_new_tokens", "grading")


def samples_path(out_dir: str | Path, benchmark: str) -> Path:
    return Path(out_dir) / "samples" / f"{benchmark}.jsonl"


def discard_outputs(out_dir: str | Path) -> None:
    """Remove what a previous evaluation wrote into `out_dir` (and nothing else)."""
    out = Path(out_dir)
    for name in (CONFIG_FILE, SUMMARY_JSON, SUMMARY_MD):
        (out / name).unlink(missing_ok=True)
    for path in (out / "samples").glob("*.jsonl*"):
        path.unlink()


def check_or_write_config(out_dir: str | Path, config: Mapping, ignore: Iterable[str] = ()) -> None:
    """Write run_config.json, or check that an existing one matches `config` on FINGERPRINT_KEYS."""
    path = Path(out_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in FINGERPRINT_KEYS:
            if key not in ignore and old.get(key) != config.get(key):
                raise ValueError(
                    f"{path}: existing samples were produced with a different {key!r} "
                    f"({json.dumps(old.get(key))[:300]} vs now {json.dumps(config.get(key))[:300]}); "
                    "use another --output-dir, or --overwrite to discard them"
                    + (", or --regrade for new grading options" if key == "grading" else ""))
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_samples(path: str | Path, n: int) -> dict[str, list[dict]]:
    """Completed problems of a sample file: id -> its `n` records, sorted by sample index.

    An interrupted run can leave a torn last line or a problem with fewer than `n` samples; those are
    dropped (and the file rewritten without them) so they are generated again."""
    path = Path(path)
    if not path.is_file():
        return {}
    by_id: dict[str, dict[int, dict]] = {}
    dropped = False
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                by_id.setdefault(str(rec["id"]), {})[int(rec["sample"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                dropped = True
    done = {pid: [recs[i] for i in range(n)] for pid, recs in by_id.items() if all(i in recs for i in range(n))}
    if dropped or len(done) != len(by_id) or any(len(r) != n for r in by_id.values()):
        write_samples(path, [rec for recs in done.values() for rec in recs])
    return done


def write_samples(path: str | Path, records: Iterable[Mapping]) -> None:
    """Replace a sample file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def append_samples(path: str | Path, records: Iterable[Mapping]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def order_benchmarks(names: Iterable[str]) -> list[str]:
    """Known benchmarks in the paper's column order, then any others sorted."""
    known = [n for n in BENCHMARKS if n in names]
    return known + sorted(n for n in names if n not in BENCHMARKS)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(summary: Mapping) -> str:
    """Per-benchmark pass@1 (+ pass@k rows when sampled) and Math-Avg, then grading details."""
    benches = summary["benchmarks"]
    names = order_benchmarks(benches)
    ks = sorted({int(k) for b in benches.values() for k in b.get("pass@k", {})} - {1})
    head = "| metric | " + " | ".join(names) + " | Math-Avg |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    label = "pass@1 (greedy)" if summary.get("mode") == "greedy" else "pass@1 (mean@n)"
    lines.append(f"| {label} | " + " | ".join(_fmt(benches[n]["pass@1"]) for n in names)
                 + f" | {_fmt(summary.get('math_avg'))} |")
    for k in ks:
        lines.append(f"| pass@{k} | " + " | ".join(_fmt(benches[n]["pass@k"].get(str(k))) for n in names) + " | |")
    lines += ["", "| benchmark | problems | samples/problem | truncated | reasons |", "|---|---|---|---|---|"]
    for n in names:
        b = benches[n]
        reasons = ", ".join(f"{r}: {c}" for r, c in b["reasons"].items())
        lines.append(f"| {n} | {b['problems']} | {b['samples_per_problem']} | {b['truncated']} | {reasons} |")
    if not summary.get("complete", False):
        lines += ["", "Math-Avg covers only the benchmarks/rows evaluated here (not the full seven sets)."]
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, summary: Mapping) -> tuple[Path, Path]:
    out = Path(out_dir)
    json_path, md_path = out / SUMMARY_JSON, out / SUMMARY_MD
    json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(f"# wmss eval: {summary.get('model', '?')}\n\n" + markdown_table(summary), encoding="utf-8")
    return json_path, md_path


def load_summary(path: str | Path) -> dict:
    """A summary.json, given the file or its output directory."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"--compare: {path} not found (give a summary.json or an eval output directory)")
    return json.loads(path.read_text(encoding="utf-8"))


def compare_table(a: Mapping, b: Mapping, label_a: str = "A", label_b: str = "B") -> str:
    """Markdown table of per-benchmark deltas (B - A) on pass@1, each shared pass@k, and Math-Avg."""
    shared = order_benchmarks(set(a["benchmarks"]) & set(b["benchmarks"]))
    if not shared:
        raise ValueError("--compare: the two summaries have no benchmark in common")
    lines = [f"| benchmark | metric | {label_a} | {label_b} | delta |", "|---|---|---|---|---|"]
    rows: list[tuple[str, str, float, float]] = []
    for name in shared:
        ba, bb = a["benchmarks"][name], b["benchmarks"][name]
        rows.append((name, "pass@1", ba["pass@1"], bb["pass@1"]))
        for k in sorted(set(ba.get("pass@k", {})) & set(bb.get("pass@k", {})), key=int):
            if k != "1":
                rows.append((name, f"pass@{k}", ba["pass@k"][k], bb["pass@k"][k]))
    avg_a = sum(a["benchmarks"][n]["pass@1"] for n in shared) / len(shared)
    avg_b = sum(b["benchmarks"][n]["pass@1"] for n in shared) / len(shared)
    rows.append(("Math-Avg", f"pass@1 over {len(shared)}", avg_a, avg_b))
    lines += [f"| {n} | {m} | {va:.2f} | {vb:.2f} | {vb - va:+.2f} |" for n, m, va, vb in rows]
    notes = []
    for key in ("mode", "sampling", "prompt", "limit"):
        if a.get(key) != b.get(key):
            notes.append(f"note: the runs differ in {key!r}")
    for side, s in ((label_a, a), (label_b, b)):
        for name in sorted(set(s["benchmarks"]) - set(shared)):
            notes.append(f"note: {name} only in {side}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
