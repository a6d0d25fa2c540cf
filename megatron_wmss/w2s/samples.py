"""Sample files: what `wmss w2s generate` writes and `w2s filter` / `w2s pairs` read. One JSON object a
line: `{"id": str, "prompt": [{"role", "content"}, ...], "samples": [solution text, ...]}` (the prompt as
the model saw it, without in-context demonstrations; `samples` in generation order)."""

from __future__ import annotations

import json
from pathlib import Path

from megatron_wmss.errors import ConfigError


def jsonl_rows(path: str | Path, option: str):
    """(line number, object) of each non-empty line of a JSONL file; ConfigError naming `option` when the
    file is missing or a line is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option}: {path} not found")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{option}: {path}:{n}: not JSON ({e.msg})") from None


def read_samples(path: str | Path, option: str) -> dict[str, dict]:
    """{id: row} of a sample file; ConfigError naming `option` and the line when a row is malformed."""
    rows: dict[str, dict] = {}
    for n, row in jsonl_rows(path, option):
        ok = (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("prompt"), list)
              and isinstance(row.get("samples"), list) and all(isinstance(s, str) for s in row["samples"]))
        if not ok:
            raise ConfigError(f"{option}: {path}:{n}: expected {{\"id\": str, \"prompt\": [messages], "
                              "\"samples\": [str, ...]}")
        if row["id"] in rows:
            raise ConfigError(f"{option}: {path}:{n}: id {row['id']!r} appears twice")
        rows[row["id"]] = row
    return rows


def write_jsonl(path: str | Path, rows) -> int:
    """Write `rows` as JSONL (through a temporary file, renamed at the end); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".incomplete")
    count = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
