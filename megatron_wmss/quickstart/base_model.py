"""M0 for the quickstart: a tiny Qwen3-architecture HF model (or, with `arch="gemma3"`, a tiny Gemma-3
text model: sliding-window and global layers, sandwich norms, tied embeddings), randomly initialized from a
seed and pre-trained briefly (plain torch + transformers, CPU) on plain task text, saved with safetensors.

The corpus (task.pretrain_corpus) is unlabelled text in the sense of language-model pre-training: no
chat template, roles, system prompt or loss mask. After ~150 steps the model is a weak but non-random
base: it knows the language and some arithmetic, has never seen the chat format of the SFT data, and
solves few problems.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class BaseModelConfig:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    # pre-training
    steps: int = 300
    batch_size: int = 32
    seq_length: int = 128
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 1234


def qwen3_config(tokenizer, cfg: BaseModelConfig):
    from transformers import Qwen3Config

    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    return Qwen3Config(
        vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings, rope_theta=10000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", attention_bias=False,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), torch_dtype="float32")


def gemma3_config(tokenizer, cfg: BaseModelConfig):
    """The same sizes as a Gemma-3 text model: every layer but the last attends within a window of a
    quarter of the pre-training sequence (so the window matters), the last one globally."""
    from transformers import Gemma3TextConfig

    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, query_pre_attn_scalar=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
        sliding_window=cfg.seq_length // 4,
        layer_types=["sliding_attention"] * (cfg.num_layers - 1) + ["full_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), dtype="float32")


# --arch -> (HF config builder, transformers model class, name in the log)
ARCHS = {"qwen3": (qwen3_config, "Qwen3ForCausalLM", "Qwen3"),
         "gemma3": (gemma3_config, "Gemma3ForCausalLM", "Gemma-3")}


def _blocks(tokenizer, docs: list[str], seq_length: int):
    """Documents joined by <|endoftext|> and cut into blocks of seq_length + 1 ids."""
    import torch

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eot)
    n = (len(ids) - 1) // seq_length
    data = torch.tensor(ids[: n * seq_length + 1])
    return torch.stack([data[i * seq_length: (i + 1) * seq_length + 1] for i in range(n)])


def pretrain(out_dir: str | Path, tokenizer_dir: str | Path, docs: list[str], cfg: BaseModelConfig,
             log=print, arch: str = "qwen3") -> dict:
    """Build, pre-train and save M0 of architecture `arch` (a key of ARCHS) as a HF dir with config,
    safetensors weights and the tokenizer; atomic (written to `<out_dir>.tmp`, renamed at the end).
    Returns a small training summary."""
    import torch
    import transformers
    from transformers import AutoTokenizer, GenerationConfig

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(cfg.seed)
    make_config, model_class, label = ARCHS[arch]
    model = getattr(transformers, model_class)(make_config(tokenizer, cfg))
    model.train()
    blocks = _blocks(tokenizer, docs, cfg.seq_length)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps))))))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"M0: {label} {cfg.num_layers} layers x {cfg.hidden_size} hidden, {n_params / 1e6:.2f}M parameters; "
        f"pre-training {cfg.steps} steps x {cfg.batch_size} x {cfg.seq_length} tokens on {len(blocks)} blocks")
    losses, start, order, pos = [], time.monotonic(), torch.randperm(len(blocks), generator=gen), 0
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=gen), 0
        batch = blocks[order[pos: pos + cfg.batch_size]]
        pos += cfg.batch_size
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone()).loss  # HF shifts labels itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            log(f"M0 pre-training step {step + 1}/{cfg.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                f"({time.monotonic() - start:.0f}s)")
    model.eval()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    GenerationConfig(eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id,
                     do_sample=False).save_pretrained(tmp)
    summary = {"config": asdict(cfg), "parameters": n_params, "losses": losses, "seconds": time.monotonic() - start}
    (tmp / "pretrain_summary.json").write_text(json.dumps(summary) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return summary
