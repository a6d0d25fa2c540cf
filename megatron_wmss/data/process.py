"""One row -> a kept sample (ids, mask, id) or a drop reason. Runs in the preprocess workers.

Checks run in this order and a row is counted under the first that fails: decoding and schema
(schema.py), --sources, special tokens in content, --require-format, --verify-answers, rendering and
mask (chat.py), supervised-token count, --max-seq-length. Duplicate ids are found later, in order, by
the writer process.
"""

from __future__ import annotations

import signal
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import filters
from .chat import DEFAULT_ALLOWED_SPECIAL, ChatRenderer, load_tokenizer, resolve_template
from .schema import RowError, validate_row


@dataclass(frozen=True)
class ProcessConfig:
    tokenizer: str
    chat_template: str = "auto"
    eot_token: str | None = None
    system_prompt: str | None = None  # None/"": no system message is added
    input_format: str = "am"
    sources: frozenset = frozenset()
    exclude_sources: frozenset = frozenset()
    require_format: bool = False
    verify_answers: bool = False
    verify_timeout: float = 5.0
    max_seq_length: int | None = None
    truncate: bool = False
    allowed_special: tuple = DEFAULT_ALLOWED_SPECIAL
    decode_check: bool = True


@dataclass
class Kept:
    sample_id: str
    source: str
    ids: np.ndarray  # int32
    mask: np.ndarray  # uint8
    truncated: bool = False
    own_system: bool = False
    rejected: "Kept | None" = None  # pairs: the rejected sequence (this one is the chosen)

    def samples(self) -> list["Kept"]:
        """The stored sequences of this row, in order: itself, then a pair's rejected sequence."""
        return [self] if self.rejected is None else [self, self.rejected]


@dataclass
class Dropped:
    reason: str
    detail: str = ""
    sample_id: str | None = None
    extra: dict = field(default_factory=dict)


class RowProcessor:
    def __init__(self, cfg: ProcessConfig):
        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.tokenizer)
        self.spec = resolve_template(tokenizer, cfg.chat_template, cfg.eot_token)
        self.renderer = ChatRenderer(tokenizer, self.spec, allowed_special=cfg.allowed_special,
                                     decode_check=cfg.decode_check)
        self.verifier = filters.AnswerVerifier(cfg.verify_timeout) if cfg.verify_answers else None
        if cfg.system_prompt:
            try:
                self.renderer.check_content([{"role": "system", "content": cfg.system_prompt}])
            except RowError as e:
                raise ValueError(f"--system-prompt: {e.detail}") from None

    def process(self, payload) -> Kept | Dropped:
        sample_id = None
        try:
            conv = validate_row(payload, self.cfg.input_format)
            sample_id = conv.sample_id
            return self._process(conv)
        except RowError as e:
            return Dropped(e.reason, e.detail, sample_id)
        except Exception as e:  # a bug or an input shape nobody foresaw: count it, keep going
            where = traceback.extract_tb(e.__traceback__)[-1]
            return Dropped("processing_error", f"{type(e).__name__}: {e} ({where.name}:{where.lineno})"[:300],
                           sample_id)

    def _process(self, conv) -> Kept:
        if conv.rejected is not None:  # a pair: both sequences pass every check, or the row is dropped
            kept = self._process_one(conv)
            kept.rejected = self._process_one(conv.rejected)
            return kept
        return self._process_one(conv)

    def _process_one(self, conv) -> Kept:
        cfg = self.cfg
        filters.check_source(conv.source, cfg.sources, cfg.exclude_sources)
        self.renderer.check_content(conv.messages)
        assistant = [m["content"] for m in conv.messages if m["role"] == "assistant"]
        if cfg.require_format:
            for turn, content in enumerate(assistant):
                filters.check_format(content, turn)
        if self.verifier is not None:
            info_answer = conv.answer_texts[-1] if conv.answer_texts else None
            self.verifier.check(conv.reference_answer, filters.answer_text(info_answer, assistant[-1]))
        messages = conv.messages
        own_system = messages[0]["role"] == "system"
        if cfg.system_prompt and not own_system:
            messages = [{"role": "system", "content": cfg.system_prompt}] + messages
        ids, mask = self.renderer.encode(messages)
        if not mask.any():
            raise RowError("no_supervised_tokens")
        truncated = False
        if cfg.max_seq_length is not None and len(ids) > cfg.max_seq_length:
            if not cfg.truncate:
                raise RowError("too_long", f"{len(ids)} tokens > {cfg.max_seq_length}")
            ids, mask, truncated = ids[: cfg.max_seq_length], mask[: cfg.max_seq_length], True
            if not mask[1:].any():  # position 0 is never a label
                raise RowError("too_long", f"nothing supervised in the first {cfg.max_seq_length} tokens")
        return Kept(conv.sample_id, conv.source, ids, mask, truncated, own_system)


# ---- worker-process entry points (picklable, module level) ----------------------------------------
_PROCESSOR: RowProcessor | None = None


def init_worker(cfg: ProcessConfig) -> None:
    """Pool initializer: Ctrl-C is handled by the parent, which terminates the pool."""
    global _PROCESSOR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PROCESSOR = RowProcessor(cfg)


def process_chunk(chunk: list[tuple]) -> list[tuple]:
    """[(file_index, line, "row", payload) | (file_index, line, "error", reason, detail)] ->
    [(file_index, line, Kept | Dropped)] in the same order."""
    out = []
    for item in chunk:
        fi, line, kind = item[:3]
        if kind == "row":
            out.append((fi, line, _PROCESSOR.process(item[3])))
        else:
            out.append((fi, line, Dropped(item[3], item[4])))
    return out
