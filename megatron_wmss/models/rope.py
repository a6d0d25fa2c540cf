"""Rotary position embedding settings read from a HF config, applied to megatron's RotaryEmbedding.

Supported HF `rope_type`s: `default`; `linear` (positions divided by `factor`: megatron's
`seq_len_interpolation_factor`); `llama3` (Llama 3.1+: low frequencies divided by `factor`, a smooth
ramp between `low_freq_factor` and `high_freq_factor` wavelengths of `original_max_position_embeddings`,
computed by megatron's `RotaryEmbedding._apply_scaling` with the checkpoint's own parameters; GPTModel's
`rope_scaling=True` would use megatron's hard-coded 1 / 4 / 8192 instead).

HF stores these either as `rope_parameters` (transformers >= 5; for Gemma-3 one dict per layer type) or
as the older `rope_theta` + `rope_scaling` fields; both are read.
"""

from __future__ import annotations

from dataclasses import dataclass


class RopeError(ValueError):
    """The HF rope settings are not supported; the message names the field and value."""


@dataclass(frozen=True)
class RopeSpec:
    """One rotary embedding: base frequency and scaling."""

    theta: float
    kind: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


_KINDS = ("default", "linear", "llama3")


def rope_from_params(params: dict, *, default_theta: float, where: str) -> RopeSpec:
    """A RopeSpec from one HF rope dict (`rope_type`/`type`, `rope_theta`, scaling fields); `where`
    names the config field in errors."""
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind not in _KINDS:
        raise RopeError(f"rope scaling type '{kind}' ({where}) is not implemented; supported: {', '.join(_KINDS)}")
    theta = float(params.get("rope_theta", default_theta))
    if kind == "default":
        return RopeSpec(theta=theta)
    if "factor" not in params:
        raise RopeError(f"{where}: rope_type '{kind}' needs a 'factor'")
    factor = float(params["factor"])
    if factor <= 0:
        raise RopeError(f"{where}: factor={factor} must be positive")
    if kind == "linear":
        return RopeSpec(theta=theta, kind=kind, factor=factor)
    missing = [k for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
               if k not in params]
    if missing:
        raise RopeError(f"{where}: rope_type 'llama3' needs {', '.join(missing)}")
    low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
    if high <= low:
        raise RopeError(f"{where}: high_freq_factor={high} must exceed low_freq_factor={low}")
    return RopeSpec(theta=theta, kind=kind, factor=factor, low_freq_factor=low, high_freq_factor=high,
                    original_max_position_embeddings=int(params["original_max_position_embeddings"]))


def rope_from_hf(hf: dict, layer_type: str | None = None, default_theta: float = 10000.0) -> RopeSpec:
    """The rope of a HF config (of its `layer_type` layers when `rope_parameters` is keyed by layer type)."""
    params = hf.get("rope_parameters")
    if params and layer_type is not None and layer_type in params:
        return rope_from_params(params[layer_type] or {}, default_theta=default_theta,
                                where=f"rope_parameters.{layer_type}")
    if params:
        return rope_from_params(params, default_theta=default_theta, where="rope_parameters")
    legacy = dict(hf.get("rope_scaling") or {})
    legacy.setdefault("rope_theta", hf.get("rope_theta", default_theta))
    return rope_from_params(legacy, default_theta=default_theta, where="rope_scaling")


def gpt_model_kwargs(spec: RopeSpec) -> dict:
    """GPTModel's rotary arguments for `spec` (llama3's frequencies are set afterwards by `apply`)."""
    theta = int(spec.theta) if float(spec.theta).is_integer() else spec.theta
    return dict(rotary_base=theta, seq_len_interpolation_factor=spec.factor if spec.kind == "linear" else None)


def apply(rotary, spec: RopeSpec) -> None:
    """Set a freshly built megatron RotaryEmbedding's frequencies for llama3 scaling (before its first
    forward: the embedding is cached per sequence length)."""
    if spec.kind == "llama3":
        rotary.inv_freq = rotary._apply_scaling(
            rotary.inv_freq, factor=spec.factor, low_freq_factor=spec.low_freq_factor,
            high_freq_factor=spec.high_freq_factor,
            original_max_position_embeddings=spec.original_max_position_embeddings)


def rotary_embedding(spec: RopeSpec, kv_channels: int):
    """A megatron RotaryEmbedding for `spec` (used by Gemma-3's sliding-window layers)."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    kwargs = gpt_model_kwargs(spec)
    rotary = RotaryEmbedding(kv_channels=kv_channels, rotary_percent=1.0, use_cpu_initialization=True, **kwargs)
    apply(rotary, spec)
    return rotary
