"""Compatibility layers (CPU-only megatron-core; lazily imported GPU extras)."""
