"""Model weights in megatron dist-checkpoint format: saved at one TP/PP layout, loadable at any other.

megatron's `dist_checkpointing` does the resharding (including the gated-MLP and QKV layouts), so
weights move between layouts without our own slicing code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core.utils import unwrap_model

# Files copied through unchanged between HF directories and our checkpoints (tokenizer, chat template,
# generation defaults).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")


def save_model(model, directory: str | Path) -> None:
    """Save this rank's shard of `model`'s weights (collective over all ranks)."""
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    if not dist.is_initialized() or dist.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    if dist.is_initialized():
        dist.barrier()
    dist_checkpointing.save(unwrap_model(model).sharded_state_dict(), str(directory))


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not match the model it is loaded into (missing or unexpected keys)."""


def _listed(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:10]) + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "")


def load_sharded_strict(sharded_state_dict: dict, directory: str | Path, *, prefix: str = "") -> dict:
    """`dist_checkpointing.load` that refuses any key mismatch with a CheckpointMismatchError naming the keys.

    Every tensor the model asks for must be in the checkpoint; every checkpoint tensor under `prefix`
    (another branch of a pair checkpoint lies outside it) must be asked for, except optimizer state
    (a training checkpoint also serves as a model checkpoint)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    # megatron's names, from the model's side: "unexpected" = asked for but not in the checkpoint,
    # "missing" = in the checkpoint but not asked for.
    state, in_checkpoint_only, in_model_only = dist_checkpointing.load(
        sharded_state_dict, str(directory), strict=StrictHandling.RETURN_ALL)
    not_loaded = {k for k in in_checkpoint_only if k.startswith(prefix) and not k.startswith("optimizer.")}
    if in_model_only or not_loaded:
        lines = [f"checkpoint {directory} does not match the model it is loaded into"]
        if in_model_only:
            lines.append(f"missing from the checkpoint: {_listed(in_model_only)}")
        if not_loaded:
            lines.append(f"unexpected in the checkpoint (the model has no such weight): {_listed(not_loaded)}")
        raise CheckpointMismatchError("; ".join(lines))
    return state


def load_model(model, directory: str | Path, *, prefix: str = "") -> None:
    """Load weights saved by `save_model` at any TP/PP layout into this rank's shard of `model`, strictly:
    a key mismatch raises CheckpointMismatchError naming the keys.

    `prefix` selects a sub-model of a checkpoint whose keys carry it (e.g. "strong." / "weak." in a pair
    checkpoint)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    inner = unwrap_model(model)
    state = load_sharded_strict(inner.sharded_state_dict(prefix=prefix), directory, prefix=prefix)
    if prefix:
        state = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state.items()}
    inner.load_state_dict(state, strict=True)


HF_CONFIG_FILE = "hf_config.json"
TOKENIZER_DIR = "tokenizer"


def write_model_metadata(directory: str | Path, hf_config: dict, tokenizer_dir: str | Path | None) -> None:
    """Record next to a checkpoint what rebuilding the model and exporting it to HF needs:
    `<dir>/hf_config.json` and `<dir>/tokenizer/` (tokenizer, chat-template and generation files copied
    from `tokenizer_dir`, usually the HF model directory). Call on one rank."""
    import json
    import shutil

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / HF_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
    if tokenizer_dir is not None:
        present = [n for n in TOKENIZER_FILES if (Path(tokenizer_dir) / n).is_file()]
        if present:
            (directory / TOKENIZER_DIR).mkdir(exist_ok=True)
        for name in present:
            if (Path(tokenizer_dir) / name).resolve() != (directory / TOKENIZER_DIR / name).resolve():
                shutil.copyfile(Path(tokenizer_dir) / name, directory / TOKENIZER_DIR / name)


def read_model_metadata(directory: str | Path) -> dict:
    """{"hf_config": dict, "tokenizer_dir": Path or None} written by `write_model_metadata`."""
    import json

    directory = Path(directory)
    path = directory / HF_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} carries no model metadata "
                                "(written by `wmss convert hf-to-megatron` and by training checkpoints)")
    tokenizer = directory / TOKENIZER_DIR
    return {"hf_config": json.loads(path.read_text()), "tokenizer_dir": tokenizer if tokenizer.is_dir() else None}


@torch.no_grad()
def grads_to_params(model) -> None:
    """Replace each parameter's value by its gradient (or zero); lets tests save gradients with
    `save_model` and compare them across layouts."""
    for param in unwrap_model(model).parameters():
        grad = getattr(param, "main_grad", None)
        if grad is None:
            grad = param.grad
        param.copy_(grad if grad is not None else torch.zeros_like(param))


def resolve_architecture(init: dict, hf_path: str) -> tuple[dict, Path | None]:
    """(HF config dict, tokenizer dir) of a run: from the first starting checkpoint's metadata (`init`
    maps branch -> checkpoint dir or None), else from the HF directory `hf_path` (model.hf_path)."""
    from megatron_wmss.errors import ConfigError
    from megatron_wmss.models.build import load_hf_config

    for path in init.values():
        if path:
            meta = read_model_metadata(path)
            return meta["hf_config"], meta["tokenizer_dir"]
    if not hf_path:
        raise ConfigError("give --init-model/--init-strong or set model.hf_path")
    return load_hf_config(hf_path), Path(hf_path)
