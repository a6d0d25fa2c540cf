"""Chat rendering and the assistant-only loss mask.

`ChatRenderer.encode(messages)` returns the token ids of the tokenizer's rendering of the whole
conversation (exactly what `tokenizer.apply_chat_template(messages, tokenize=True)` gives) and a mask that
is 1 on the tokens of every assistant turn's text plus its end-of-turn token, 0 elsewhere (system / user
text, role headers, the newline after the end-of-turn token).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..prompts import CHATML_TEMPLATE
from .schema import RowError

# The paper's tag-style system prompt (App. E.4) and plain ChatML (Qwen2/2.5/3: <|im_start|>{role}\n
# {content}<|im_end|>\n, generation prompt <|im_start|>assistant\n, content verbatim) live in
# megatron_wmss.prompts, shared with evaluation so both render identical prompts.
BUILTIN_TEMPLATES = {"chatml": (CHATML_TEMPLATE, "<|im_end|>")}
DEFAULT_ALLOWED_SPECIAL = ("<think>", "</think>")


@dataclass(frozen=True)
class TemplateSpec:
    name: str  # "chatml", "tokenizer" or the path of a .jinja file
    template: str
    eot: str  # end-of-turn token closing every assistant turn (supervised)


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """A fast HF tokenizer from a directory (with tokenizer_config.json or only tokenizer.json) or a tokenizer.json."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_dir() and (p / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    elif p.is_dir() and (p / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(p / "tokenizer.json"))
    elif p.is_file() and p.suffix == ".json":
        tok = PreTrainedTokenizerFast(tokenizer_file=str(p))
    else:
        raise FileNotFoundError(f"--tokenizer {path}: not a tokenizer directory or tokenizer.json file")
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"--tokenizer {path}: a fast (tokenizers-backed) tokenizer is required for offsets")
    return tok


def _single_token_id(tokenizer, token: str) -> int | None:
    ids = tokenizer.backend_tokenizer.encode(token, add_special_tokens=False).ids
    return ids[0] if len(ids) == 1 else None


def resolve_template(tokenizer, name: str = "auto", eot: str | None = None) -> TemplateSpec:
    """Pick the chat template: 'auto' (tokenizer's own, else ChatML if the vocab has <|im_start|>),
    'tokenizer', a built-in name ('chatml'), or a path to a Jinja file. `eot` overrides the end-of-turn token."""
    vocab_has = lambda t: _single_token_id(tokenizer, t) is not None  # noqa: E731
    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if name == "auto":
        if own:
            name = "tokenizer"
        elif vocab_has("<|im_start|>") and vocab_has("<|im_end|>"):
            name = "chatml"
        else:
            raise ValueError("--chat-template auto: the tokenizer has no chat template and no ChatML tokens; "
                             "pass --chat-template chatml|PATH.jinja")
    default_eot = None
    if name == "tokenizer":
        if not own:
            raise ValueError("--chat-template tokenizer: the tokenizer has no chat_template")
        template = own
    elif name in BUILTIN_TEMPLATES:
        template, default_eot = BUILTIN_TEMPLATES[name]
    elif Path(name).is_file():
        template = Path(name).read_text(encoding="utf-8")
    else:
        raise ValueError(f"--chat-template {name!r}: not 'auto', 'tokenizer', {sorted(BUILTIN_TEMPLATES)} or a file")
    if eot is None:
        eot = default_eot
    if eot is None:
        eot = "<|im_end|>" if "<|im_end|>" in template and vocab_has("<|im_end|>") else tokenizer.eos_token
    if not eot or not vocab_has(eot):
        raise ValueError(f"--eot-token {eot!r}: must be one token of the vocabulary "
                         "(the token closing an assistant turn)")
    return TemplateSpec(name, template, eot)


class ChatRenderer:
    """Renders conversations with one template and computes the assistant-only mask."""

    def __init__(self, tokenizer, spec: TemplateSpec, *, allowed_special=DEFAULT_ALLOWED_SPECIAL,
                 decode_check: bool = True):
        self.tokenizer = tokenizer
        self.spec = spec
        self.backend = tokenizer.backend_tokenizer
        self.decode_check = decode_check
        self.eot_id = _single_token_id(tokenizer, spec.eot)
        specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        specials |= set(tokenizer.all_special_tokens)
        self.control_tokens = sorted((specials - set(allowed_special)) | {spec.eot})  # eot is never allowed
        alternatives = "|".join(re.escape(t) for t in sorted(self.control_tokens, key=len, reverse=True))
        self._control_re = re.compile(alternatives) if alternatives else None

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.spec.template, tokenize=False,
                add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja raise_exception(), missing keys, ...
            raise RowError("template_error", f"{type(e).__name__}: {e}"[:200]) from None
        if not isinstance(text, str):
            raise RowError("template_error", f"template rendered {type(text).__name__}")
        return text

    def check_content(self, messages: list[dict]) -> None:
        """Special tokens inside content would be encoded as control tokens (e.g. a fake <|im_end|>)."""
        if self._control_re is None:
            return
        for i, m in enumerate(messages):
            hit = self._control_re.search(m["content"])
            if hit:
                raise RowError("special_token_in_content", f"messages[{i}] contains {hit.group(0)!r}")

    def encode(self, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """-> (ids int32 [n], mask uint8 [n]); raises RowError rather than return a doubtful mask.

        HF's `return_assistant_tokens_mask` needs `{% generation %}` markers that ChatML/Qwen templates
        lack, so the mask is computed here: the whole conversation is rendered and tokenized once; for
        each assistant turn i, render(messages[:i], add_generation_prompt=True) must be a string prefix of
        the whole, and so must render(messages[:i+1]); the text between them, up to and including the
        first end-of-turn token, is the supervised character span. Tokens map to characters through the
        tokenizer's offsets; a token crossing a span edge, or decoded span text that differs from the
        (normalized) rendered text, drops the row instead of guessing.
        """
        self.check_content(messages)
        text = self.render(messages)
        enc = self.backend.encode(text, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        starts, ends = offsets[:, 0], offsets[:, 1]
        mask = np.zeros(len(ids), dtype=np.uint8)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], add_generation_prompt=True)
            upto = text if i == len(messages) - 1 else self.render(messages[: i + 1])
            if not (text.startswith(upto) and upto.startswith(prompt)):
                raise RowError("template_not_prefix", f"assistant turn {i}")
            k = upto.find(self.spec.eot, len(prompt))
            if k < 0:
                raise RowError("eot_not_found", f"assistant turn {i} has no {self.spec.eot!r}")
            a, b = len(prompt), k + len(self.spec.eot)
            crosses = ((starts < a) & (ends > a)) | ((starts < b) & (ends > b))
            zero_width_on_edge = (starts == ends) & ((starts == a) | (starts == b))
            if crosses.any() or zero_width_on_edge.any():
                j = int(np.flatnonzero(crosses | zero_width_on_edge)[0])
                raise RowError("mask_boundary_mismatch",
                               f"assistant turn {i}: token {j} spans chars {starts[j]}..{ends[j]}, edges {a}, {b}")
            inside = np.flatnonzero((starts >= a) & (ends <= b))
            if len(inside) == 0 or np.any(np.diff(inside) != 1):
                raise RowError("mask_boundary_mismatch", f"assistant turn {i}: no contiguous token span")
            if self.decode_check:
                self._check_decoded(ids[inside], text[a:b], i)
            mask[inside] = 1
        return ids.astype(np.int32), mask

    def _check_decoded(self, span_ids: np.ndarray, span_text: str, turn: int) -> None:
        got = self.backend.decode(span_ids.tolist(), skip_special_tokens=False)
        normalizer = self.backend.normalizer
        want = normalizer.normalize_str(span_text) if normalizer is not None else span_text
        if got != want:
            at = next((n for n, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
            raise RowError("mask_decode_mismatch", f"assistant turn {turn}: decoded text differs at char {at}")
