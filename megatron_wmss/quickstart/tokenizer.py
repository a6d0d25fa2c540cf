"""A small byte-level BPE tokenizer trained locally with HF `tokenizers` on the task text, saved as a HF
`PreTrainedTokenizerFast` with the ChatML special tokens and chat template the training data uses.

Qwen-style choices: byte-level pre-tokenization (decode reproduces the text exactly, which
`wmss preprocess` checks on every supervised span), every digit its own token (arithmetic is done digit
by digit), `<|im_end|>` as EOS (closes an assistant turn) and `<|endoftext|>` as padding.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from megatron_wmss.prompts import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Plain-text tags of the AM format: one token each, not "special" (kept when decoding responses).
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train the BPE model on `texts` (plus the tags) and wrap it for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    corpus = [*TAG_TOKENS, *texts]
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAG_TOKENS])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 unk_token=None, bos_token=None, model_max_length=4096)
    hf.chat_template = CHATML_TEMPLATE
    return hf


def train_tokenizer(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 512):
    """Train and `save_pretrained` into `out_dir` atomically; returns the tokenizer."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf = build_tokenizer(texts, vocab_size)
    hf.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return hf
