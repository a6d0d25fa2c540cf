"""Test settings: single-threaded math (2-core CI), quiet megatron warnings, GPU tests skipped on CPU."""
import os
import warnings

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")
warnings.filterwarnings("ignore")


TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 300-token byte-level BPE tokenizer (ChatML specials) and a 2-layer Qwen3, saved as a HF dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from megatron_wmss.eval.benchmarks import load_benchmark
    from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT

    out = tmp_path_factory.mktemp("tiny_qwen3")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [p.problem for p in load_benchmark("gsm8k", limit=20)] + [DEFAULT_SYSTEM_PROMPT, r"\boxed{42}"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=TINY_SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf_tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    return out


# The slowest test files (measured, each a few minutes of end-to-end processes on 2 cores), run first:
# under `-n 2 --dist loadfile` the workers take files in collection order, so starting with the longest
# ones keeps one of them from running alone at the end (alphabetically they come last).
SLOWEST_FIRST = ("test_study.py", "test_pipeline.py", "test_training_parallel.py", "test_w2s_run.py",
                 "test_quickstart.py", "test_training_preference.py", "test_training_baselines.py",
                 "test_golden.py", "test_convert_gguf.py", "test_gemma3_training.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
