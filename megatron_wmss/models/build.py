"""HF `config.json` (Qwen2/2.5, Qwen3, Llama incl. Llama-3.1 RoPE scaling, Gemma-3 text: models/gemma3.py)
-> megatron TransformerConfig + layer spec -> GPTModel.

The Transformer Engine spec is used when TE imports on a CUDA machine (required for FP8), the
megatron-core local spec otherwise. The vocabulary is padded to a multiple of
`make_vocab_size_divisible_by * tp`; `ArchInfo.vocab_size` keeps the unpadded size so logits and
exported embeddings can be un-padded.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from megatron_wmss.compat import optional
from megatron_wmss.errors import ConfigError
from megatron_wmss.distributed import compute_device
from megatron_wmss.models import gemma3, rope
from megatron_wmss.models.rope import RopeSpec

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", gemma3.MODEL_TYPE)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class UnsupportedModelError(ValueError):
    """The HF config describes something this builder does not implement; names the field."""


@dataclass(frozen=True)
class ArchInfo:
    """What the builder read from the HF config and decided, beyond TransformerConfig."""

    model_type: str
    vocab_size: int  # HF embedding rows (unpadded)
    padded_vocab_size: int
    max_position_embeddings: int
    rotary_base: float
    tie_word_embeddings: bool
    qk_layernorm: bool
    add_qkv_bias: bool
    transformer_impl: str  # "transformer_engine" or "local"
    rope: RopeSpec | None = None  # the model's (Gemma-3: the global layers') rotary embedding
    local_rope: RopeSpec | None = None  # Gemma-3's sliding-window layers


def load_hf_config(source: str | Path | dict) -> dict:
    """A HF config as a dict, from a dict, a `config.json` path or a model directory."""
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"HF config not found: {path}")
    return json.loads(path.read_text())


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron's padding rule: the smallest multiple of divisible_by * tp that holds the vocab."""
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)


def _ropes(hf: dict) -> tuple[RopeSpec, RopeSpec | None]:
    """(model rope, Gemma-3 local rope or None); unsupported settings raise naming the field."""
    try:
        if hf["model_type"] == gemma3.MODEL_TYPE:
            return gemma3.ropes(hf)
        return rope.rope_from_hf(hf), None
    except rope.RopeError as err:
        raise UnsupportedModelError(str(err)) from None


def _check_supported(hf: dict, tp: int) -> None:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        hint = (" (a multimodal Gemma-3 checkpoint: convert its text decoder, model_type 'gemma3_text')"
                if model_type == "gemma3" else "")
        raise UnsupportedModelError(f"model_type '{model_type}' is not supported "
                                    f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)}){hint}")
    if model_type == gemma3.MODEL_TYPE:
        try:
            gemma3.check(hf)
        except ValueError as err:
            raise UnsupportedModelError(str(err)) from None
    elif hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act '{hf['hidden_act']}' is not supported (only silu)")
    if hf.get("mlp_bias"):
        raise UnsupportedModelError("mlp_bias=true is not supported")
    if hf.get("use_sliding_window"):
        raise UnsupportedModelError("use_sliding_window=true is not supported")
    heads = hf["num_attention_heads"]
    groups = hf.get("num_key_value_heads") or heads
    if heads % tp:
        raise UnsupportedModelError(f"tensor parallel size {tp} does not divide num_attention_heads={heads}")
    if groups % tp:
        raise UnsupportedModelError(
            f"tensor parallel size {tp} does not divide num_key_value_heads (query groups)={groups}")


def resolve_impl(requested: str = "auto") -> str:
    """'auto' -> transformer_engine when CUDA and TE are both usable, else local."""
    if requested == "local":
        return "local"
    usable = torch.cuda.is_available() and optional.available("transformer_engine.pytorch")
    if requested == "transformer_engine":
        if not usable:
            optional.require("transformer_engine.pytorch")
            raise RuntimeError("transformer_impl=transformer_engine needs a CUDA device")
        return "transformer_engine"
    return "transformer_engine" if usable else "local"


def resolve_dtype(params_dtype: str = "auto") -> torch.dtype:
    """'auto' -> bf16 on GPU, fp32 on CPU."""
    if params_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return _DTYPES[params_dtype]


def transformer_config_from_hf(hf_source: str | Path | dict, *, tp: int = 1, pp: int = 1, cp: int = 1,
                               params_dtype: str = "auto", transformer_impl: str = "auto",
                               make_vocab_size_divisible_by: int = 128, sequence_parallel: bool = False,
                               fp8: str | None = None, fp8_recipe: str = "delayed", fp8_margin: int = 0,
                               fp8_amax_history_len: int = 1024, fp8_amax_compute_algo: str = "max",
                               recompute_granularity: str | None = None, **overrides: Any):
    """Map a HF config to (TransformerConfig, ArchInfo). `overrides` go straight to TransformerConfig."""
    from megatron.core.transformer import TransformerConfig

    hf = load_hf_config(hf_source)
    _check_supported(hf, tp)
    layers = hf["num_hidden_layers"]
    if pp < 1 or layers % pp:
        raise ConfigError(f"parallel.pp={pp}: the pipeline stages must split the model's {layers} layers evenly "
                          "(num_hidden_layers in its HF config)")
    impl = resolve_impl(transformer_impl)
    if fp8 is not None and impl != "transformer_engine":
        raise UnsupportedModelError("fp8 needs the Transformer Engine implementation (GPU with TE installed)")
    dtype = resolve_dtype(params_dtype)
    on_gpu = torch.cuda.is_available()
    if sequence_parallel and tp > 1 and impl == "local" and on_gpu:  # on CPU compat/cpu.py makes them fit
        raise ConfigError("parallel.sequence_parallel: megatron's local layer spec (torch norms) refuses it on a "
                          "GPU; use model.transformer_impl=transformer_engine (or auto with Transformer Engine)")
    heads = hf["num_attention_heads"]
    model_type = hf["model_type"]
    add_qkv_bias = model_type == "qwen2" or bool(hf.get("attention_bias", False))
    qk_layernorm = model_type in ("qwen3", gemma3.MODEL_TYPE)
    kwargs = dict(
        num_layers=hf["num_hidden_layers"], hidden_size=hf["hidden_size"], num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads") or heads, ffn_hidden_size=hf["intermediate_size"],
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        normalization="RMSNorm", layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, add_qkv_bias=add_qkv_bias,
        qk_layernorm=qk_layernorm, hidden_dropout=0.0, attention_dropout=0.0,
        init_method_std=hf.get("initializer_range", 0.02), attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, context_parallel_size=cp,
        sequence_parallel=sequence_parallel and tp > 1,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        use_cpu_initialization=not on_gpu,
        # Fused kernels need CUDA (apex / TE / triton); the unfused paths give the same math.
        bias_activation_fusion=on_gpu, bias_dropout_fusion=on_gpu, masked_softmax_fusion=on_gpu,
        apply_rope_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        recompute_granularity=recompute_granularity,
        recompute_method="uniform" if recompute_granularity == "full" else None,
        recompute_num_layers=1 if recompute_granularity == "full" else None,
    )
    if model_type == gemma3.MODEL_TYPE:
        kwargs.update(gemma3.config_kwargs(hf, impl))
    if fp8 is not None:
        kwargs.update(fp8=fp8, fp8_recipe=fp8_recipe, fp8_margin=fp8_margin,
                      fp8_amax_history_len=fp8_amax_history_len, fp8_amax_compute_algo=fp8_amax_compute_algo)
    kwargs.update(overrides)
    tcfg = TransformerConfig(**kwargs)
    model_rope, local_rope = _ropes(hf)
    arch = ArchInfo(
        model_type=model_type, vocab_size=hf["vocab_size"],
        padded_vocab_size=padded_vocab_size(hf["vocab_size"], make_vocab_size_divisible_by, tp),
        max_position_embeddings=hf.get("max_position_embeddings", 4096), rotary_base=model_rope.theta,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", model_type == gemma3.MODEL_TYPE)),
        qk_layernorm=qk_layernorm,
        add_qkv_bias=add_qkv_bias, transformer_impl=impl, rope=model_rope, local_rope=local_rope)
    return tcfg, arch


def transformer_config_from_recipe(cfg, hf_config: dict, **extra: Any):
    """`transformer_config_from_hf` with a recipe's model and parallel settings (layout, dtype,
    implementation, vocab padding, sequence parallelism); `extra` adds the training-only ones (fp8,
    recompute, per-token loss)."""
    m, p = cfg.model, cfg.parallel
    return transformer_config_from_hf(
        hf_config, tp=p.tp, pp=p.pp, cp=p.cp, params_dtype=m.params_dtype, transformer_impl=m.transformer_impl,
        make_vocab_size_divisible_by=m.make_vocab_size_divisible_by, sequence_parallel=p.sequence_parallel, **extra)


def layer_spec(arch: ArchInfo, tcfg=None, vp_stage: int | None = None):
    """The megatron layer spec (Gemma-3: the decoder block spec of this stage, which needs `tcfg`)
    for this architecture and implementation."""
    from megatron.core.models.gpt import gpt_layer_specs

    if arch.model_type == gemma3.MODEL_TYPE:
        return gemma3.block_spec(tcfg, arch.transformer_impl, arch.local_rope, vp_stage=vp_stage)
    if arch.transformer_impl == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_layernorm)
    return gpt_layer_specs.get_gpt_layer_local_spec(qk_layernorm=arch.qk_layernorm, normalization="RMSNorm")


@functools.lru_cache(maxsize=1)
def _hidden_state_gpt_model_cls():
    from megatron.core.models.gpt import GPTModel

    class HiddenStateGPTModel(GPTModel):
        """GPTModel that, with `return_hidden = True`, ends its last stage at the final norm and returns
        the hidden states [s, b, h], so the LM head's loss (the fused mixed CE) can own the output
        projection. With `return_hidden = False` (default) it is exactly GPTModel."""

        return_hidden = False

        def _postprocess(self, hidden_states, **kwargs):
            if self.return_hidden:
                return hidden_states
            return super()._postprocess(hidden_states, **kwargs)

        def output_weight(self):
            """This stage's output-layer weight shard [V/tp, h] (the embedding when tied)."""
            if self.share_embeddings_and_output_weights:
                return self.shared_embedding_or_output_weight()
            return self.output_layer.weight

    return HiddenStateGPTModel


def build_gpt_model(tcfg, arch: ArchInfo, *, pre_process: bool | None = None, post_process: bool | None = None,
                    vp_stage: int | None = None):
    """A GPTModel for this rank's pipeline stage (stage flags default to megatron's parallel_state)."""
    from megatron.core import parallel_state

    GPTModel = _hidden_state_gpt_model_cls()

    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    model_rope = arch.rope or RopeSpec(theta=arch.rotary_base)
    model = GPTModel(
        config=tcfg, transformer_layer_spec=layer_spec(arch, tcfg, vp_stage), vocab_size=arch.padded_vocab_size,
        max_sequence_length=arch.max_position_embeddings, pre_process=pre_process, post_process=post_process,
        share_embeddings_and_output_weights=arch.tie_word_embeddings, position_embedding_type="rope",
        rotary_percent=1.0, vp_stage=vp_stage, **rope.gpt_model_kwargs(model_rope))
    rope.apply(model.rotary_pos_emb, model_rope)
    if arch.model_type == gemma3.MODEL_TYPE:
        gemma3.scale_embeddings(model, tcfg.hidden_size)
    model.unpadded_vocab_size = arch.vocab_size  # losses leave the padding rows out of the softmax
    model.transformer_impl = arch.transformer_impl  # how packed rows keep attention per sample (packed_attention.py)
    # Every parameter in params_dtype, as megatron's Float16Module would leave it: torch's RMSNorm (the
    # local spec's norm without TE) creates its weight in fp32, and megatron's non-distributed
    # Float16Optimizer maps only bf16/fp16 parameters to checkpoint keys. Parameters only: buffers
    # (TE's FP8 scaling state) keep their dtype.
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != tcfg.params_dtype:
            param.data = param.data.to(tcfg.params_dtype)
    if torch.cuda.is_available():
        model.cuda(compute_device())
    return model
