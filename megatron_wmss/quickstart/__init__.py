"""`wmss quickstart`: the whole WMSS pipeline on a small generated task, on one CPU box in minutes
(see cli.py and docs/quickstart.md)."""

from megatron_wmss.quickstart.cli import main

__all__ = ["main"]
