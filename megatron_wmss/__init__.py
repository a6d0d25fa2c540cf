"""megatron_wmss: WMSS (Weak-Driven Learning, arXiv 2602.08222) on Megatron-Core."""

__version__ = "0.1.0"
