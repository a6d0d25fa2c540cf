"""Lazy imports of GPU-only extras, with a message that says where each comes from."""

from __future__ import annotations

import importlib
from types import ModuleType

_PROVIDERS = {
    "transformer_engine": "pip install 'megatron_wmss[gpu]' (transformer-engine[pytorch]) or use the NGC PyTorch container",
    "vllm": "pip install 'megatron_wmss[gpu]' (vllm), or use `--backend transformers` on CPU",
    "apex": "use the NGC PyTorch container (apex is not on PyPI)",
}


class MissingExtraError(ImportError):
    """A GPU-only package is needed but not installed."""


def require(module: str) -> ModuleType:
    """Import `module` or raise MissingExtraError naming the extra/container that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = _PROVIDERS.get(module, "see README.md (Install)")
        raise MissingExtraError(f"'{module}' is required here but not installed: {hint}. ({err})") from err


def available(module: str) -> bool:
    """True if `module` imports (never raises)."""
    try:
        importlib.import_module(module)
        return True
    except Exception:  # TE raises OSError/RuntimeError on machines without CUDA libraries
        return False
