"""`wmss eval --benchmark-file`: user-supplied JSONL benchmarks (plain rows and AM-schema chat rows)."""

import json

import pytest

from megatron_wmss.eval.benchmarks import BenchmarkFile, load_benchmark_file
from megatron_wmss.commands.eval import main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plain_and_chat_rows(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        {"id": "a", "problem": "What is 2+3?", "answer": "5"},
        {"question": "Half of 3?", "answer": 1.5},
        {"problem": "Simplify 2/4.", "answer": "\\frac{1}{2}"},
        {"problem": "Pick.", "answer": "b", "choices": {"A": "1", "B": "2"}},
        {"messages": [{"role": "user", "content": "Tom has 3 apples...", "info": {"reference_answer": "7"}},
                      {"role": "assistant", "content": "<think>..</think>\n<answer>\\boxed{7}</answer>"}]},
    ])
    probs = load_benchmark_file(str(path))
    assert [p.id for p in probs] == ["a", "mine-1", "mine-2", "mine-3", "mine-4"]
    assert [p.answer_type for p in probs] == ["numeric", "numeric", "math", "choice", "numeric"]
    assert [p.reference for p in probs] == ["5", "1.5", "\\frac{1}{2}", "B", "7"]
    assert probs[4].problem == "Tom has 3 apples..."
    assert len(load_benchmark_file(f"other={path}", limit=2)) == 2
    assert BenchmarkFile.parse(f"other={path}").name == "other"
    assert BenchmarkFile.parse(str(path)).name == "mine"


@pytest.mark.parametrize("rows, message", [
    ([{"problem": "x"}], "no 'answer'"),
    ([{"answer": "1"}], "no 'problem'"),
    ([{"problem": "x", "answer": "1", "answer_type": "exact"}], "answer_type"),
    ([{"problem": "x", "answer": "one", "answer_type": "numeric"}], "not a number"),
    ([{"id": 1, "problem": "x", "answer": "1"}, {"id": "1", "problem": "y", "answer": "2"}], "duplicate problem id"),
])
def test_bad_rows_name_the_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark_file(str(_write(tmp_path / "bad.jsonl", rows)))


def test_bundled_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bundled"):
        BenchmarkFile.parse(str(tmp_path / "gsm8k.jsonl"))


def test_cli_evaluates_only_the_file_and_checks_its_content_on_resume(tiny_model, tmp_path):
    bench = _write(tmp_path / "arith.jsonl", [{"id": f"q{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}
                                              for i in range(3)])
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model), "--benchmark-file", str(bench), "--max-new-tokens", "6",
            "--output-dir", str(out), "--no-progress", "--grade-workers", "0"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["benchmarks"]) == ["arith"] and summary["benchmarks"]["arith"]["problems"] == 3
    assert 0.0 <= summary["benchmarks"]["arith"]["pass@1"] <= 100.0
    config = json.loads((out / "run_config.json").read_text())
    assert config["benchmark_files"]["arith"]["path"] == str(bench.resolve())
    assert main(argv) == 0  # resume: nothing to do
    _write(bench, [{"id": "q0", "problem": "What is 9+1?", "answer": "10"}])
    assert main(argv) == 2  # same name, other content
