"""Name map between HF Gemma-3 text (`Gemma3ForCausalLM`, model_type `gemma3_text`) and our megatron
Gemma-3 model (models/gemma3.py), TP=1/PP=1 local spec.

Every norm is Gemma's `(1 + w)` RMSNorm on both sides with `w` stored zero-centred, so norm weights
are copied unchanged (no `+ 1` arithmetic, which would not round-trip bit for bit in bf16). The
embedding's sqrt(hidden) scale is applied in the forward pass, not folded into the weights, for the
same reason; the output layer is tied to the embedding (no lm_head tensor) unless the config unties it.
"""

from __future__ import annotations

from megatron_wmss.convert.mappings import TensorMap, tied


def build_maps(hf: dict) -> list[TensorMap]:
    """Every megatron tensor of the Gemma-3 text model described by `hf`, with its HF sources."""
    maps = [TensorMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab")]
    for i in range(hf["num_hidden_layers"]):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        attn = h + "self_attn."
        maps += [
            TensorMap(m + "input_layernorm.weight", (h + "input_layernorm.weight",), "copy"),
            TensorMap(m + "self_attention.linear_qkv.weight", tuple(f"{attn}{p}_proj.weight" for p in "qkv"), "qkv"),
            TensorMap(m + "self_attention.q_layernorm.weight", (attn + "q_norm.weight",), "copy"),
            TensorMap(m + "self_attention.k_layernorm.weight", (attn + "k_norm.weight",), "copy"),
            TensorMap(m + "self_attention.linear_proj.weight", (attn + "o_proj.weight",), "copy"),
            TensorMap(m + "self_attention.post_layernorm.weight", (h + "post_attention_layernorm.weight",), "copy"),
            TensorMap(m + "pre_mlp_layernorm.weight", (h + "pre_feedforward_layernorm.weight",), "copy"),
            TensorMap(m + "mlp.linear_fc1.weight", (h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"), "gate_up"),
            TensorMap(m + "mlp.linear_fc2.weight", (h + "mlp.down_proj.weight",), "copy"),
            TensorMap(m + "mlp.post_layernorm.weight", (h + "post_feedforward_layernorm.weight",), "copy"),
        ]
    maps.append(TensorMap("decoder.final_layernorm.weight", ("model.norm.weight",), "copy"))
    if not tied(hf):
        maps.append(TensorMap("output_layer.weight", ("lm_head.weight",), "vocab"))
    return maps
