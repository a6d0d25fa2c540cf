"""pass@k against brute-force enumeration; summaries, markdown and --compare."""

import itertools
import json
from fractions import Fraction

import pytest

from megatron_wmss.eval import results as res
from megatron_wmss.commands.eval import main
from megatron_wmss.eval.metrics import math_avg, mean_pass_at_k, pass_at_k, summarize_benchmark


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of all k-subsets of n samples (c of them correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_edges():
    assert pass_at_k(64, 0, 64) == 0.0
    assert pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(64, 16, 1) == pytest.approx(0.25)  # pass@1 = c/n = mean@n
    assert 0.0 < pass_at_k(1000, 1, 10) < 0.011  # large n does not overflow
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    assert mean_pass_at_k([(4, 0), (4, 4)], 2) == 0.5


def _records(per_problem):
    return [{"id": pid, "sample": i, "correct": ok, "reason": "correct" if ok else "wrong",
             "finish_reason": "length" if i == 0 else "stop"}
            for pid, oks in per_problem.items() for i, ok in enumerate(oks)]


def test_summarize_benchmark():
    recs = _records({"a": [True, False, False, False], "b": [False] * 4, "c": [True] * 4})
    s = summarize_benchmark(recs, ks=[1, 2, 4, 8])
    assert s["problems"] == 3 and s["samples_per_problem"] == 4
    assert s["pass@1"] == pytest.approx(100 * (0.25 + 0 + 1) / 3)
    assert s["pass@k"]["2"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert s["pass@k"]["4"] == pytest.approx(200 / 3)
    assert "8" not in s["pass@k"]  # k > n is not reported
    assert s["reasons"] == {"correct": 5, "wrong": 7} and s["truncated"] == 3
    with pytest.raises(ValueError, match="different sample counts"):
        summarize_benchmark(_records({"a": [True, False], "b": [True]}))
    assert math_avg({"x": {"pass@1": 50.0}, "y": {"pass@1": 70.0}}) == 60.0


def _summary(values, mode="greedy"):
    benches = {name: {"pass@1": v, "pass@k": {"1": v, "4": min(100.0, v + 10)}, "problems": 10,
                      "samples_per_problem": 1, "truncated": 0, "reasons": {"correct": 1}}
               for name, v in values.items()}
    return {"model": "m", "mode": mode, "benchmarks": benches, "math_avg": math_avg(benches), "complete": False}


def test_markdown_and_compare(tmp_path, capsys):
    a = _summary({"math500": 70.0, "gsm8k": 90.0, "aime25": 10.0})
    b = _summary({"math500": 73.5, "gsm8k": 89.0, "svamp": 93.0})
    md = res.markdown_table(a)
    assert md.splitlines()[0] == "| metric | aime25 | math500 | gsm8k | Math-Avg |"  # paper column order
    assert "| pass@1 (greedy) | 10.00 | 70.00 | 90.00 | 56.67 |" in md
    assert "| pass@4 | 20.00 | 80.00 | 100.00 | |" in md
    for name, s in (("A", a), ("B", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    assert main(["--compare", str(tmp_path / "A"), str(tmp_path / "B" / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "| math500 | pass@1 | 70.00 | 73.50 | +3.50 |" in out
    assert "| gsm8k | pass@1 | 90.00 | 89.00 | -1.00 |" in out
    assert "| Math-Avg | pass@1 over 2 | 80.00 | 81.25 | +1.25 |" in out
    assert "aime25 only in" in out and "svamp only in" in out
    assert main(["--compare", str(tmp_path / "A"), str(tmp_path / "missing")]) == 2


def test_load_samples_drops_torn_and_incomplete(tmp_path):
    path = tmp_path / "s.jsonl"
    recs = [{"id": "p1", "sample": 0}, {"id": "p1", "sample": 1}, {"id": "p2", "sample": 0}]
    res.write_samples(path, recs)
    with path.open("a") as fh:
        fh.write('{"id": "p2", "sam')  # interrupted mid-write
    done = res.load_samples(path, n=2)
    assert list(done) == ["p1"]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["p1", "p1"]
