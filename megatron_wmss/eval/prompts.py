"""Render evaluation prompts exactly as in training: same chat template, same system prompt, same
tokenization (the rendered text is tokenized without adding special tokens; the template owns BOS).

Where the template and system prompt come from, first match wins:
  1. `--chat-template` (a file path or a literal Jinja string; 'chatml' = CHATML_TEMPLATE) and
     `--system-prompt` / `--no-system-prompt`;
  2. the data manifest (`--manifest <prefix>.manifest.json`, written by `wmss preprocess`): keys
     `chat_template` (the Jinja text, a name such as 'chatml', or an object with "template" and
     optionally "eot_token") and `system_prompt` (null = training used no system message), at the top
     level or one level down;
  3. defaults: the model tokenizer's own chat template, else CHATML_TEMPLATE; DEFAULT_SYSTEM_PROMPT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from megatron_wmss.prompts import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPT

UNSET = object()  # "not given": use the manifest or the default
_TEMPLATE_NAMES = {"chatml": CHATML_TEMPLATE}
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


@dataclass(frozen=True)
class PromptSpec:
    chat_template: str | None  # None = use the tokenizer's own template
    system_prompt: str | None  # None = no system message
    source: str  # where the two came from, recorded in the summary
    eot_token: str | None = None  # end-of-turn token named by the manifest (an extra stop token)
    train_vocab_size: int | None = None  # the manifest's tokenizer size, checked against the model's


def read_manifest(path: str | Path) -> dict:
    """The prompt entries of a data manifest, only those present: chat_template (text or name),
    eot_token, system_prompt, vocab_size (of the training tokenizer)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--manifest {path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--manifest {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--manifest {path}: expected a JSON object")
    found: dict = {}
    scopes = [data] + [v for v in data.values() if isinstance(v, dict)]
    for key in ("chat_template", "system_prompt"):
        for scope in scopes:
            if key in scope:
                found[key] = scope[key]
                break
    if not found:
        raise ValueError(f"--manifest {path}: has neither 'chat_template' nor 'system_prompt' "
                         "(top level or one level down); pass --chat-template/--system-prompt instead")
    template = found.get("chat_template")
    if isinstance(template, dict):  # {"name": ..., "template": ..., "eot_token": ...}
        if template.get("eot_token"):
            found["eot_token"] = str(template["eot_token"])
        found["chat_template"] = template.get("template") or template.get("name")
    if isinstance(data.get("tokenizer"), dict) and isinstance(data["tokenizer"].get("vocab_size"), int):
        found["vocab_size"] = data["tokenizer"]["vocab_size"]
    return found


def _template_text(value: str, origin: str) -> str | None:
    """Jinja text from a literal template, a built-in name or a file; None for 'tokenizer'/'auto'."""
    if value.strip().lower() in ("tokenizer", "auto"):
        return None
    if value.strip().lower() in _TEMPLATE_NAMES:
        return _TEMPLATE_NAMES[value.strip().lower()]
    if "{{" in value or "{%" in value:
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{origin}: {value!r} is neither a Jinja template, 'chatml', nor an existing file")
    return path.read_text(encoding="utf-8")


def resolve_prompt_spec(manifest: str | None = None, chat_template: str | None = None,
                        system_prompt=UNSET) -> PromptSpec:
    """Combine explicit options, a manifest and the defaults (see the module docstring).

    `system_prompt`: a string, None for no system message, or leave unset for manifest/default."""
    sources = []
    found = read_manifest(manifest) if manifest else {}
    if chat_template is not None:
        template, tsrc = _template_text(chat_template, "--chat-template"), "--chat-template"
    elif found.get("chat_template"):
        template, tsrc = _template_text(str(found["chat_template"]), f"--manifest {manifest}"), "manifest"
    else:
        template, tsrc = None, "default"
    if template is None:
        tsrc += " -> tokenizer's own (CHATML_TEMPLATE if it has none)"
    if system_prompt is not UNSET:
        system, ssrc = system_prompt, "command line"
    elif "system_prompt" in found:
        system, ssrc = found["system_prompt"], "manifest"
    else:
        system, ssrc = DEFAULT_SYSTEM_PROMPT, "DEFAULT_SYSTEM_PROMPT"
    sources.append(f"chat_template: {tsrc}")
    sources.append(f"system_prompt: {ssrc}")
    return PromptSpec(template, system or None, "; ".join(sources), found.get("eot_token"), found.get("vocab_size"))


def effective_template(spec: PromptSpec, tokenizer) -> str:
    """The Jinja template that will be used with this tokenizer."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # tokenizers with several named templates
        own = own.get("default")
    return spec.chat_template or own or CHATML_TEMPLATE


def render(problem: str, spec: PromptSpec, tokenizer) -> tuple[str, list[int]]:
    """(prompt text, prompt token ids) for one user turn, ending with the assistant generation prompt."""
    messages = [{"role": "user", "content": problem}]
    if spec.system_prompt:
        messages.insert(0, {"role": "system", "content": spec.system_prompt})
    text = tokenizer.apply_chat_template(messages, chat_template=effective_template(spec, tokenizer),
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text, list(ids)


def stop_token_ids(tokenizer, generation_config_eos=None, extra_tokens=()) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS, the model's generation-config EOS, the
    usual end-of-turn tokens (<|im_end|> ...) that exist in this vocabulary, and `extra_tokens`."""
    ids: list[int] = []
    extra = generation_config_eos if isinstance(generation_config_eos, (list, tuple)) else [generation_config_eos]
    for tid in [tokenizer.eos_token_id, *extra]:
        if isinstance(tid, int) and tid not in ids:
            ids.append(tid)
    vocab = tokenizer.get_vocab()
    for tok in (*END_OF_TURN_TOKENS, *extra_tokens):
        tid = vocab.get(tok)
        if tid is not None and tid not in ids:
            ids.append(tid)
    return ids
