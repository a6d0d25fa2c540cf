"""Row validation: raw line or record -> a checked `Conversation`, or a `RowError` naming the reason.

Four input formats share one output shape (docs/data.md):
  am        AM-DeepSeek-R1-Distilled rows: `messages` of user/assistant turns, each with an `info` dict.
  messages  the same chat shape without the `info` requirement (any chat data).
  gsm8k     `question` + `answer` ending in `#### N`, rendered as
            `<think>solution</think>\n<answer>... \\boxed{N}</answer>`.
  pairs     preference pairs `prompt` + `chosen` / `rejected` (data/pairs.py): the chosen conversation,
            with the rejected one in `Conversation.rejected`; ids get `/chosen` and `/rejected`.

Every reason a row can be dropped for is listed in `REASONS` with its kind: "invalid" (bad input;
`--strict` stops on it) or "filter" (a valid row that a filter removed).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

INPUT_FORMATS = ("am", "messages", "gsm8k", "pairs")
ROLES = ("system", "user", "assistant")

# reason -> (kind, description); docs/data.md lists the same table.
REASONS: dict[str, tuple[str, str]] = {
    "unreadable_file": ("invalid", "input file cannot be opened or decoded (bad zstd/parquet data)"),
    "truncated_zst": ("invalid", ".zst stream ends in the middle of a frame"),
    "blank_line": ("invalid", "empty line"),
    "invalid_utf8": ("invalid", "line is not valid UTF-8"),
    "malformed_json": ("invalid", "line is not valid JSON"),
    "integer_too_long": ("invalid", "a JSON integer has more digits than Python converts (sys.get_int_max_str_digits)"),
    "not_an_object": ("invalid", "JSON value is not an object"),
    "invalid_unicode": ("invalid", "a string holds a lone surrogate (cannot be encoded as UTF-8)"),
    "missing_messages": ("invalid", "no `messages` field"),
    "bad_messages": ("invalid", "`messages` is not a non-empty list"),
    "message_not_object": ("invalid", "a message is not an object"),
    "missing_role": ("invalid", "a message has no `role`"),
    "unknown_role": ("invalid", "role is not system/user/assistant"),
    "bad_role_order": ("invalid", "roles are not [system] user assistant (user assistant)*"),
    "bad_content": ("invalid", "content missing or not a string"),
    "empty_content": ("invalid", "content is empty or whitespace"),
    "missing_info": ("invalid", "AM row: a message has no `info` object"),
    "bad_info": ("invalid", "AM row: `info` is not an object or its fields have wrong types"),
    "bad_id": ("invalid", "row `id` is not a non-empty string or integer"),
    "bad_pair_row": ("invalid", "pair row without a `prompt` of messages ending with a user turn and two "
                     "different non-empty strings `chosen` / `rejected`"),
    "bad_gsm8k_row": ("invalid", "gsm8k row without string `question` / `answer` ending in `#### N`"),
    "special_token_in_content": ("invalid", "content contains a special token of the tokenizer"),
    "template_error": ("invalid", "the chat template raised an error"),
    "template_not_prefix": ("invalid", "rendering of a conversation prefix is not a prefix of the whole"),
    "eot_not_found": ("invalid", "assistant turn rendered without the end-of-turn token"),
    "mask_boundary_mismatch": ("invalid", "a token straddles an assistant span boundary"),
    "mask_decode_mismatch": ("invalid", "decoded supervised tokens differ from the assistant text"),
    "duplicate_id": ("invalid", "sample id seen earlier in this run (first occurrence kept)"),
    "processing_error": ("invalid", "unexpected error while processing the row"),
    "source_filtered": ("filter", "source not selected by --sources / --exclude-sources"),
    "bad_format": ("filter", "--require-format: assistant text is not <think>..</think> <answer>..</answer>"),
    "no_reference_answer": ("filter", "--verify-answers: row has no reference_answer"),
    "no_boxed_answer": ("filter", "--verify-answers: answer has no \\boxed{...}"),
    "answer_unparseable": ("filter", "--verify-answers: math-verify parsed nothing from answer or reference"),
    "answer_mismatch": ("filter", "--verify-answers: boxed answer does not verify against the reference"),
    "verify_timeout": ("filter", "--verify-answers: math-verify exceeded --verify-timeout"),
    "too_long": ("filter", "more tokens than --max-seq-length (or nothing supervised left after --truncate)"),
    "no_supervised_tokens": ("filter", "no assistant token to train on"),
}


class RowError(Exception):
    """A row is dropped for `reason` (a key of REASONS); `detail` says what was found."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Conversation:
    """A validated row. `messages` holds only role/content (no system prompt added yet)."""

    messages: list[dict]
    sample_id: str
    source: str
    reference_answer: str | None = None
    answer_texts: list[str | None] = field(default_factory=list)  # per assistant turn: info.answer_content
    rejected: "Conversation | None" = None  # pairs: the rejected conversation (this one is the chosen)


def parse_payload(payload) -> dict:
    """bytes (a JSONL line) or an already-decoded record (parquet / HF datasets) -> dict."""
    if isinstance(payload, (bytes, bytearray)):
        if not payload.strip():
            raise RowError("blank_line")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RowError("invalid_utf8", f"byte {e.start}: {e.reason}") from None
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as e:
            raise RowError("malformed_json", f"{e.msg} (column {e.colno})") from None
        except RecursionError:
            raise RowError("malformed_json", "nesting too deep") from None
        except ValueError as e:  # the other ValueError of json.loads: int() refuses > 4,300 digits
            raise RowError("integer_too_long", str(e)[:200]) from None
    if not isinstance(payload, dict):
        raise RowError("not_an_object", f"got {type(payload).__name__}")
    return payload


def _check_text(value, what: str) -> str:
    if not isinstance(value, str):
        raise RowError("bad_content", f"{what} is {type(value).__name__}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError("invalid_unicode", f"{what} holds a lone surrogate") from None
    if not value.strip():
        raise RowError("empty_content", what)
    return value


def _row_id(row: dict) -> str | None:
    if "id" not in row or row["id"] is None:
        return None
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        raise RowError("bad_id", f"id {rid!r}")
    return str(rid)


def content_hash_id(parts: list) -> str:
    """Stable id from content: 'h-' + 16 hex digits of sha256 over the JSON of `parts`."""
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return "h-" + hashlib.sha256(blob).hexdigest()[:16]


def _check_info(info, i: int) -> dict:
    if info is None:
        raise RowError("missing_info", f"messages[{i}]")
    if not isinstance(info, dict):
        raise RowError("bad_info", f"messages[{i}].info is {type(info).__name__}")
    source = info.get("source")
    if not isinstance(source, str) or not source:
        raise RowError("bad_info", f"messages[{i}].info.source is {source!r}")
    for key in ("reference_answer", "answer_content", "think_content"):
        value = info.get(key)
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
            raise RowError("bad_info", f"messages[{i}].info.{key} is {type(value).__name__}")
    return info


def _check_roles(roles: list[str]) -> None:
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if not body or body != expected[: len(body)]:
        raise RowError("bad_role_order", "roles " + ",".join(roles))
    if body[-1] != "assistant":
        raise RowError("bad_role_order", "conversation must end with an assistant turn: " + ",".join(roles))


def _as_str(value) -> str | None:
    return None if value is None else str(value)


def _validate_messages(row: dict, require_info: bool) -> Conversation:
    if "messages" not in row:
        raise RowError("missing_messages", "keys: " + ",".join(sorted(map(str, row))[:8]))
    raw = row["messages"]
    if not isinstance(raw, list) or not raw:
        raise RowError("bad_messages", f"messages is {type(raw).__name__}" + (" (empty)" if raw == [] else ""))
    messages, infos = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise RowError("message_not_object", f"messages[{i}] is {type(m).__name__}")
        if "role" not in m or m["role"] is None:
            raise RowError("missing_role", f"messages[{i}]")
        role = m["role"]
        if role not in ROLES:
            raise RowError("unknown_role", f"messages[{i}].role = {role!r}")
        if "content" not in m:
            raise RowError("bad_content", f"messages[{i}] has no content")
        content = _check_text(m["content"], f"messages[{i}].content")
        info = m.get("info")
        if require_info and role != "system":
            info = _check_info(info, i)
        elif not isinstance(info, dict):
            info = {}
        messages.append({"role": role, "content": content})
        infos.append(info)
    _check_roles([m["role"] for m in messages])
    rid = _row_id(row)
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    source = infos[first_user].get("source") or row.get("source") or "unknown"
    refs = [infos[i].get("reference_answer") for i in range(len(messages)) if messages[i]["role"] != "system"]
    reference = next((_as_str(r) for r in refs if r is not None and str(r).strip()), None)
    answers = [_as_str(infos[i].get("answer_content")) for i, m in enumerate(messages) if m["role"] == "assistant"]
    sid = rid or content_hash_id([[m["role"], m["content"]] for m in messages])
    return Conversation(messages, sid, str(source), reference, answers)


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def _validate_gsm8k(row: dict) -> Conversation:
    q, a = row.get("question"), row.get("answer")
    if not isinstance(q, str) or not isinstance(a, str) or "####" not in a:
        raise RowError("bad_gsm8k_row", "need string `question` and `answer` ending in '#### N'")
    _check_text(q, "question")
    _check_text(a, "answer")
    worked, final = a.rsplit("####", 1)
    worked, final = _GSM8K_CALC.sub("", worked).strip(), final.strip()
    if not worked or not final:
        raise RowError("bad_gsm8k_row", "empty worked solution or final answer")
    content = f"<think>{worked}</think>\n<answer>The final answer is $\\boxed{{{final}}}$.</answer>"
    messages = [{"role": "user", "content": q}, {"role": "assistant", "content": content}]
    sid = _row_id(row) or content_hash_id(["gsm8k", q, a])
    return Conversation(messages, sid, "gsm8k", final, [f"\\boxed{{{final}}}"])


def _validate_pair(row: dict) -> Conversation:
    from .pairs import CHOSEN, REJECTED, pair_conversations

    try:
        chosen, rejected = pair_conversations(row)
    except ValueError as e:
        raise RowError("bad_pair_row", str(e)) from None
    rid = _row_id(row) or content_hash_id(["pair", row["prompt"], row["chosen"], row["rejected"]])
    source = row.get("info", {}).get("source") if isinstance(row.get("info"), dict) else None
    sides = [_validate_messages({"messages": conv, "id": rid + suffix, "source": source or "pairs"}, require_info=False)
             for conv, suffix in ((chosen, CHOSEN), (rejected, REJECTED))]
    sides[0].rejected = sides[1]
    return sides[0]


def validate_row(payload, input_format: str) -> Conversation:
    """Decode and check one row; raises RowError."""
    row = parse_payload(payload)
    if input_format == "gsm8k":
        return _validate_gsm8k(row)
    if input_format == "pairs":
        return _validate_pair(row)
    return _validate_messages(row, require_info=input_format == "am")
