"""A tiny but real end-to-end setup for `wmss run` tests: a character-level HF tokenizer with a ChatML
template, a random tiny Qwen3 HF model, AM-schema arithmetic rows, preprocessed with `wmss preprocess`."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def make_tokenizer(out_dir: Path) -> None:
    """Every printable ASCII character is one token (WordLevel over a split-every-char pre-tokenizer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from megatron_wmss.prompts import CHATML_TEMPLATE

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(string.printable))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIALS[1:])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)


def make_model(out_dir: Path, vocab_size: int, seed: int = 0) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=2, pad_token_id=0)
    Qwen3ForCausalLM(config).save_pretrained(out_dir)


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        answer = a + b
        user = {"role": "user", "content": f"{a}+{b}=?",
                "info": {"source": "toy", "reference_answer": str(answer), "test_case": None,
                         "think_content": None, "answer_content": None}}
        body = f"\\boxed{{{answer}}}"
        assistant = {"role": "assistant", "content": f"<think>{a}+{b}={answer}</think>\n<answer>{body}</answer>",
                     "info": {"source": "toy", "think_content": f"{a}+{b}={answer}", "answer_content": body,
                              "reference_answer": str(answer), "test_case": None}}
        rows.append({"messages": [user, assistant]})
    return rows


def build_setup(root: Path, num_rows: int = 24) -> dict:
    """Create tokenizer + model (one HF dir) and the preprocessed data; return their paths."""
    from megatron_wmss.commands.preprocess import main as preprocess

    hf_dir, data_dir = root / "m0_hf", root / "data"
    make_tokenizer(hf_dir)
    from transformers import AutoTokenizer

    make_model(hf_dir, len(AutoTokenizer.from_pretrained(hf_dir)))
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = data_dir / "toy.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_rows(num_rows)))
    rc = preprocess(["--input", str(rows), "--output-prefix", str(data_dir / "toy"), "--tokenizer", str(hf_dir),
                     "--no-system-prompt", "--workers", "1"])
    assert rc == 0, "preprocessing the toy rows failed"
    return {"hf": hf_dir, "data": data_dir / "toy"}
