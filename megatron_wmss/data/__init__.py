"""Chat SFT data: preprocessing into Megatron indexed datasets and the SFT dataset reader (docs/data.md).

Names are imported lazily so that preprocessing workers (which import this package) do not pay for
torch / megatron-core imports they never use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SFTDataset": "sft_dataset",
    "dp_shard": "sft_dataset",
    "epoch_permutation": "sft_dataset",
    "read_manifest": "indexed",
    "read_ids": "indexed",
    "open_dataset": "indexed",
    "dataset_files": "indexed",
    "AtomicDatasetWriter": "indexed",
    "ChatRenderer": "chat",
    "TemplateSpec": "chat",
    "load_tokenizer": "chat",
    "resolve_template": "chat",
    "CHATML_TEMPLATE": "chat",
    "REASONS": "schema",
    "RowError": "schema",
    "validate_row": "schema",
    "ProcessConfig": "process",
    "RowProcessor": "process",
    "open_sft_dataset": "recipe_dataset",
    "open_samples": "recipe_dataset",
    "training_rows": "recipe_dataset",
    "PackedDataset": "packing",
    "pack_bins": "packing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
