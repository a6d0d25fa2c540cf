"""Name and layout maps between HF (Qwen2/2.5, Qwen3, Llama; Gemma-3 in gemma3_maps.py) and megatron
GPTModel state dicts.

One `TensorMap` per megatron tensor: the HF tensors it is made of and how ("copy", "qkv", "gate_up",
"vocab"). The megatron side is the TP=1/PP=1 local-spec GPTModel; megatron dist checkpointing reshards
it to any TP/PP (and maps local-spec names to Transformer Engine ones).

Layouts (megatron-core 0.16):
- linear_qkv.weight/bias: [groups, (q_per_group + 2) * head_dim, ...] -> for each query group its query
  heads, then its key head, then its value head (HF: separate q/k/v_proj; query head j uses kv head
  j // q_per_group).
- linear_fc1.weight: cat([gate_proj, up_proj], 0) (megatron's gated unit: act(first half) * second half).
- embedding / output_layer: HF rows, then zero rows up to the padded vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_wmss.models.build import UnsupportedModelError


GEMMA3 = "gemma3_text"


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message names the tensor, file or value."""


@dataclass(frozen=True)
class Dims:
    """The sizes the layouts depend on."""

    hidden: int
    ffn: int
    heads: int
    groups: int
    head_dim: int
    vocab: int  # HF rows
    padded_vocab: int  # megatron rows at TP=1

    @property
    def q_per_group(self) -> int:
        return self.heads // self.groups


@dataclass(frozen=True)
class TensorMap:
    """megatron tensor `megatron` <-> HF tensors `hf` (in order), combined as `kind`."""

    megatron: str
    hf: tuple[str, ...]
    kind: str  # copy | qkv | gate_up | vocab


def dims_from(hf: dict, padded_vocab: int) -> Dims:
    heads = hf["num_attention_heads"]
    return Dims(hidden=hf["hidden_size"], ffn=hf["intermediate_size"], heads=heads,
                groups=hf.get("num_key_value_heads") or heads,
                head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
                vocab=hf["vocab_size"], padded_vocab=padded_vocab)


def check_convertible(hf: dict) -> None:
    """Config features that build.py accepts but whose weights have no megatron counterpart here."""
    model_type = hf.get("model_type")
    if model_type in ("llama", "qwen3") and hf.get("attention_bias"):
        raise UnsupportedModelError(
            f"attention_bias=true for model_type '{model_type}' adds an o_proj bias, which is not supported")
    heads = hf.get("num_attention_heads")
    groups = hf.get("num_key_value_heads") or heads
    if heads and groups and heads % groups:
        raise UnsupportedModelError(
            f"num_attention_heads={heads} is not a multiple of num_key_value_heads={groups}")


def has_qkv_bias(hf: dict) -> bool:
    return hf["model_type"] == "qwen2" or bool(hf.get("attention_bias", False))


def build_maps(hf: dict) -> list[TensorMap]:
    """Every megatron tensor of the model described by HF config `hf`, with its HF sources."""
    if hf["model_type"] == GEMMA3:
        from megatron_wmss.convert import gemma3_maps

        return gemma3_maps.build_maps(hf)
    maps = [TensorMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab")]
    qkv_bias = has_qkv_bias(hf)
    for i in range(hf["num_hidden_layers"]):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        attn = h + "self_attn."
        maps += [
            TensorMap(m + "input_layernorm.weight", (h + "input_layernorm.weight",), "copy"),
            TensorMap(m + "self_attention.linear_qkv.weight",
                      tuple(f"{attn}{p}_proj.weight" for p in "qkv"), "qkv"),
            TensorMap(m + "self_attention.linear_proj.weight", (attn + "o_proj.weight",), "copy"),
            TensorMap(m + "pre_mlp_layernorm.weight", (h + "post_attention_layernorm.weight",), "copy"),
            TensorMap(m + "mlp.linear_fc1.weight", (h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"),
                      "gate_up"),
            TensorMap(m + "mlp.linear_fc2.weight", (h + "mlp.down_proj.weight",), "copy"),
        ]
        if qkv_bias:
            maps.append(TensorMap(m + "self_attention.linear_qkv.bias",
                                  tuple(f"{attn}{p}_proj.bias" for p in "qkv"), "qkv"))
        if hf["model_type"] == "qwen3":
            maps += [TensorMap(m + "self_attention.q_layernorm.weight", (attn + "q_norm.weight",), "copy"),
                     TensorMap(m + "self_attention.k_layernorm.weight", (attn + "k_norm.weight",), "copy")]
    maps.append(TensorMap("decoder.final_layernorm.weight", ("model.norm.weight",), "copy"))
    if not tied(hf):
        maps.append(TensorMap("output_layer.weight", ("lm_head.weight",), "vocab"))
    return maps


def ignorable_hf_tensor(name: str, hf: dict) -> bool:
    """HF tensors that carry nothing the model uses: rotary caches, and lm_head when it is tied."""
    if name.endswith("rotary_emb.inv_freq"):
        return True
    return name == "lm_head.weight" and tied(hf)


def tied(hf: dict) -> bool:
    """Whether the output layer is the embedding (HF's default: untied, except Gemma-3)."""
    return bool(hf.get("tie_word_embeddings", hf["model_type"] == GEMMA3))


def expected_hf_shapes(hf: dict) -> dict[str, tuple[int, ...]]:
    """Shape of every HF tensor the maps read."""
    d = dims_from(hf, padded_vocab=hf["vocab_size"])
    q, kv = d.heads * d.head_dim, d.groups * d.head_dim
    by_suffix = {
        "q_proj.weight": (q, d.hidden), "k_proj.weight": (kv, d.hidden), "v_proj.weight": (kv, d.hidden),
        "q_proj.bias": (q,), "k_proj.bias": (kv,), "v_proj.bias": (kv,), "o_proj.weight": (d.hidden, q),
        "gate_proj.weight": (d.ffn, d.hidden), "up_proj.weight": (d.ffn, d.hidden),
        "down_proj.weight": (d.hidden, d.ffn), "q_norm.weight": (d.head_dim,), "k_norm.weight": (d.head_dim,),
        "layernorm.weight": (d.hidden,), "norm.weight": (d.hidden,),
        "embed_tokens.weight": (d.vocab, d.hidden), "lm_head.weight": (d.vocab, d.hidden),
    }
    shapes = {}
    for tmap in build_maps(hf):
        for name in tmap.hf:
            suffix = next(s for s in by_suffix if name.endswith(s))
            shapes[name] = by_suffix[suffix]
    return shapes


def to_megatron(tmap: TensorMap, tensors: list[torch.Tensor], d: Dims) -> torch.Tensor:
    """Combine the HF tensors of `tmap` into the megatron tensor (TP=1 layout)."""
    if tmap.kind == "copy":
        return tensors[0]
    if tmap.kind == "gate_up":
        return torch.cat(tensors, dim=0)
    if tmap.kind == "vocab":
        (rows,) = tensors
        pad = rows.new_zeros((d.padded_vocab - rows.shape[0], *rows.shape[1:]))
        return torch.cat([rows, pad], dim=0)
    if tmap.kind == "qkv":
        q, k, v = tensors
        rest = q.shape[1:]
        q = q.reshape(d.groups, d.q_per_group * d.head_dim, *rest)
        k = k.reshape(d.groups, d.head_dim, *rest)
        v = v.reshape(d.groups, d.head_dim, *rest)
        return torch.cat([q, k, v], dim=1).reshape(-1, *rest)
    raise ValueError(f"unknown mapping kind {tmap.kind}")


def to_hf(tmap: TensorMap, tensor: torch.Tensor, d: Dims) -> list[torch.Tensor]:
    """Split the megatron tensor of `tmap` (TP=1 layout) into its HF tensors, in `tmap.hf` order."""
    if tmap.kind == "copy":
        return [tensor]
    if tmap.kind == "gate_up":
        return list(torch.chunk(tensor, 2, dim=0))
    if tmap.kind == "vocab":
        return [tensor[:d.vocab]]
    if tmap.kind == "qkv":
        rest = tensor.shape[1:]
        grouped = tensor.reshape(d.groups, (d.q_per_group + 2) * d.head_dim, *rest)
        q, k, v = torch.split(grouped, [d.q_per_group * d.head_dim, d.head_dim, d.head_dim], dim=1)
        return [q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)]
    raise ValueError(f"unknown mapping kind {tmap.kind}")
