"""Gemma-3's text decoder (HF `gemma3_text`) on megatron-core: config fields and layer spec.

What megatron-core provides and is used as is: q/k layernorm, GeGLU (gated unit + our tanh GELU),
`softmax_scale` (= query_pre_attn_scalar ** -0.5), sliding-window attention (`window_size` +
`window_attn_skip_freq`, read per layer by the local DotProductAttention and by TEDotProductAttention),
tied embeddings, linear RoPE scaling of the global layers (`seq_len_interpolation_factor`).

What it does not, written here:
- `GemmaRMSNorm`: Gemma's RMSNorm is `x * (1 + w)` in fp32 with w stored zero-centred. megatron's
  local norm (torch RMSNorm) refuses `layernorm_zero_centered_gamma`, so the local path uses this one;
  the Transformer Engine path uses TE's norms with `layernorm_zero_centered_gamma=True`.
- `Gemma3SelfAttention` / `Gemma3MLP`: the "sandwich" norms after attention and after the MLP (before
  the residual adds) have no slot in megatron's TransformerLayer, so they live at the end of these
  subclasses; the attention subclass also gives sliding-window layers their own (local base) RoPE.
- `scale_embeddings`: the embedding output times sqrt(hidden), rounded to the parameter dtype as HF does.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from megatron_wmss.models.rope import RopeError, RopeSpec, rope_from_hf, rotary_embedding

MODEL_TYPE = "gemma3_text"
_LAYER_TYPES = ("sliding_attention", "full_attention")


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (HF `gelu_pytorch_tanh`), the gate of Gemma's GeGLU."""
    return F.gelu(x, approximate="tanh")


def layer_types(hf: dict) -> list[str]:
    """Each layer's attention type; HF's default is every 6th layer global (`sliding_window_pattern`)."""
    n = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:
        pattern = hf.get("sliding_window_pattern", 6)
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    if len(types) != n or any(t not in _LAYER_TYPES for t in types):
        raise ValueError(f"layer_types must list {n} entries of {' / '.join(_LAYER_TYPES)}, got {types}")
    return list(types)


def check(hf: dict) -> None:
    """Raise ValueError naming the field for Gemma-3 features this implementation does not have."""
    for field in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(field) is not None:
            raise ValueError(f"{field}={hf[field]} is not supported (Gemma-3 checkpoints have none)")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true is not supported (causal decoder only)")
    act = hf.get("hidden_activation", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise ValueError(f"hidden_activation '{act}' is not supported (only gelu_pytorch_tanh)")
    if hf.get("attention_bias"):
        raise ValueError("attention_bias=true is not supported for gemma3_text")
    types = layer_types(hf)
    if "sliding_attention" in types and not hf.get("sliding_window"):
        raise ValueError("sliding_window must be set when layer_types has sliding_attention layers")
    local = ropes(hf)[1]
    if local.kind != "default":
        raise RopeError(f"rope_parameters.sliding_attention: rope_type '{local.kind}' is not supported "
                        "(only the global layers may be scaled)")


def ropes(hf: dict) -> tuple[RopeSpec, RopeSpec]:
    """(global, local) rotary settings: `rope_parameters` per layer type, or the older `rope_theta` +
    `rope_scaling` (global) and `rope_local_base_freq` (local)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        return (rope_from_hf(hf, "full_attention", default_theta=1e6),
                rope_from_hf(hf, "sliding_attention", default_theta=1e4))
    return (rope_from_hf({**hf, "rope_theta": hf.get("rope_theta", 1e6)}),
            RopeSpec(theta=float(hf.get("rope_local_base_freq", 1e4))))


def config_kwargs(hf: dict, transformer_impl: str) -> dict:
    """TransformerConfig fields for Gemma-3 beyond the common ones build.py sets."""
    types = layer_types(hf)
    window = hf.get("sliding_window")
    kwargs = dict(
        activation_func=gelu_tanh, qk_layernorm=True,
        softmax_scale=hf.get("query_pre_attn_scalar", 256) ** -0.5,
        # megatron's fused bias-GeGLU and its fused softmax kernel (which ignores the window) are not
        # this model's math; the unfused paths are.
        bias_activation_fusion=False, masked_softmax_fusion=False,
        # TE's norms compute (1 + w) themselves; the local path uses GemmaRMSNorm (megatron's refuses it).
        layernorm_zero_centered_gamma=transformer_impl == "transformer_engine",
    )
    if window and "sliding_attention" in types:
        # HF: key j visible from query i when i - j < sliding_window -> megatron/TE (left, right) window.
        kwargs.update(window_size=(window - 1, 0),
                      window_attn_skip_freq=[int(t == "sliding_attention") for t in types])
    return kwargs


class GemmaRMSNorm(torch.nn.Module):
    """RMSNorm computing `norm(x) * (1 + w)` in fp32 (Gemma's convention: w stored zero-centred, so
    HF weights copy unchanged). Same constructor as megatron's norms, for use in layer specs."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))
        # Replicated across TP; with sequence parallelism its gradient is all-reduced like megatron's norms.
        setattr(self.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * (1.0 + self.weight.float())).type_as(x)


def _build_norm(norm, config, hidden_size: int):
    """A norm module with a `sharded_state_dict` (replicated across TP): megatron's MLP calls that
    method on every child, which plain norm modules (ours, TE's) do not have."""
    from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

    module = norm(config=config, hidden_size=hidden_size, eps=config.layernorm_epsilon)

    def sharded_state_dict(prefix="", sharded_offsets=(), metadata=None):
        state = module.state_dict(prefix="", keep_vars=True)
        return make_sharded_tensors_for_checkpoint(state, prefix, {}, sharded_offsets)

    module.sharded_state_dict = sharded_state_dict
    return module


@functools.lru_cache(maxsize=1)
def _module_classes():
    """(Gemma3SelfAttention, Gemma3MLP), defined on first use so importing this module stays light."""
    from megatron.core.transformer.attention import SelfAttention
    from megatron.core.transformer.mlp import MLP
    from megatron.core.transformer.utils import is_layer_window_attention

    class Gemma3SelfAttention(SelfAttention):
        """megatron SelfAttention + Gemma's post-attention norm; sliding-window layers rotate with
        their own local-base RoPE instead of the model's global one."""

        def __init__(self, config, submodules, layer_number, *, post_norm, local_rope: RopeSpec, **kwargs):
            super().__init__(config, submodules, layer_number, **kwargs)
            self.post_layernorm = _build_norm(post_norm, config, config.hidden_size)
            self.local_rotary = None
            if is_layer_window_attention(config.window_size, config.window_attn_skip_freq, layer_number):
                self.local_rotary = rotary_embedding(local_rope, config.kv_channels)

        def forward(self, hidden_states, attention_mask, *args, rotary_pos_emb=None, **kwargs):
            if self.local_rotary is not None and rotary_pos_emb is not None:
                rotary_pos_emb = self.local_rotary(rotary_pos_emb.shape[0])  # same (full) sequence length
            output, bias = super().forward(hidden_states, attention_mask, *args, rotary_pos_emb=rotary_pos_emb,
                                           **kwargs)
            if bias is not None:
                output = output + bias
            return self.post_layernorm(output), None

    class Gemma3MLP(MLP):
        """megatron MLP + Gemma's post-feedforward norm."""

        def __init__(self, config, submodules, *, post_norm, **kwargs):
            super().__init__(config, submodules, **kwargs)
            self.post_layernorm = _build_norm(post_norm, config, config.hidden_size)

        def forward(self, hidden_states, *args, **kwargs):
            output, bias = super().forward(hidden_states, *args, **kwargs)
            if bias is not None:
                output = output + bias
            return self.post_layernorm(output), None

    return Gemma3SelfAttention, Gemma3MLP


def block_spec(config, transformer_impl: str, local_rope: RopeSpec, vp_stage: int | None = None):
    """The decoder block spec for this pipeline stage: megatron's GPT layer spec (local or TE) with
    Gemma's attention / MLP subclasses and norms swapped in."""
    from megatron.core.models.gpt import gpt_layer_specs
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import (TransformerBlock, TransformerBlockSubmodules,
                                                             get_num_layers_to_build)

    attention_cls, mlp_cls = _module_classes()
    if transformer_impl == "transformer_engine":
        from megatron.core.extensions.transformer_engine import TENorm

        base = gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)
        norm = TENorm  # zero-centred gamma from config.layernorm_zero_centered_gamma
        layer = base.submodules
        attn_sub = layer.self_attention.submodules
    else:
        base = gpt_layer_specs.get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm")
        norm = GemmaRMSNorm
        layer = dataclasses.replace(base.submodules, input_layernorm=norm, pre_mlp_layernorm=norm)
        attn_sub = dataclasses.replace(layer.self_attention.submodules, q_layernorm=norm, k_layernorm=norm)
    attention = ModuleSpec(module=attention_cls, submodules=attn_sub,
                           params={**layer.self_attention.params, "post_norm": norm, "local_rope": local_rope})
    mlp = ModuleSpec(module=mlp_cls, submodules=layer.mlp.submodules, params={"post_norm": norm})
    layer_spec = ModuleSpec(module=base.module, submodules=dataclasses.replace(layer, self_attention=attention,
                                                                                mlp=mlp))
    layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return ModuleSpec(module=TransformerBlock,
                      submodules=TransformerBlockSubmodules(layer_specs=[layer_spec] * layers, layer_norm=norm))


def scale_embeddings(model, hidden_size: int) -> None:
    """Multiply the embedding output by sqrt(hidden_size) cast to the embedding dtype (as HF's
    Gemma3TextScaledWordEmbedding does: in bf16 the factor itself is rounded)."""
    if getattr(model, "embedding", None) is None:  # not the first pipeline stage
        return
    scale = math.sqrt(hidden_size)

    def hook(module, inputs, output):
        return output * torch.tensor(scale, dtype=module.word_embeddings.weight.dtype, device=output.device)

    model.embedding.register_forward_hook(hook)
