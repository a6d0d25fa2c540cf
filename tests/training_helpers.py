"""Shared pieces of the training tests: a tiny Qwen3 config, an in-memory SFT dataset with the
SFTDataset interface, initial checkpoints, and rank functions that train and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TINY_QWEN3 = dict(model_type="qwen3", vocab_size=90, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  tie_word_embeddings=True, max_position_embeddings=64, rms_norm_eps=1e-6)
SEQ = 12


class ToySFTDataset(torch.utils.data.Dataset):
    """Random token rows with a prompt part (mask 0) and a completion part (mask 1)."""

    def __init__(self, n: int = 16, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.rows = []
        for i in range(n):
            ids = torch.randint(0, TINY_QWEN3["vocab_size"], (SEQ + 1,), generator=gen)
            prompt = 3 + i % 4
            mask = torch.zeros(SEQ)
            mask[prompt:] = 1.0
            self.rows.append(dict(tokens=ids[:-1], labels=ids[1:], loss_mask=mask,
                                  position_ids=torch.arange(SEQ), sample_id=f"toy-{i}"))
        self.sample_ids = [r["sample_id"] for r in self.rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def epoch_order(self, epoch: int, phase: int = 0) -> np.ndarray:
        return np.random.default_rng([7, epoch, phase]).permutation(len(self.rows))


def make_config(run_dir, objective="wmss", tp=1, pp=1, dist_opt=False, **over):
    from megatron_wmss.config import load_config

    overrides = [f"run_dir={run_dir}", f"training.objective={objective}", f"parallel.tp={tp}",
                 f"parallel.pp={pp}", f"parallel.use_distributed_optimizer={str(dist_opt).lower()}",
                 "training.global_batch_size=4", "training.micro_batch_size=1", "training.train_iters=3",
                 "training.lr=1e-3", "training.warmup_fraction=0.0", "training.tensorboard=false",
                 f"data.seq_length={SEQ}", "model.make_vocab_size_divisible_by=8", "training.log_interval=100"]
    overrides += [f"{k}={v}" for k, v in over.items()]
    return load_config(overrides=overrides)


def init_checkpoints_rank(workdir, hf_config: dict = TINY_QWEN3):
    """Write two different starting models (M_t -> 'strong', M_{t-1} -> 'weak') with metadata."""
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import save_model, write_model_metadata
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize(seed=1)
    tcfg, arch = transformer_config_from_hf(hf_config, make_vocab_size_divisible_by=8)
    for name, seed in (("strong", 11), ("weak", 22)):
        torch.manual_seed(seed)
        model = build_gpt_model(tcfg, arch)
        save_model(model, Path(workdir) / name)
        write_model_metadata(Path(workdir) / name, hf_config, None)
    distributed.destroy()


def train_runs_rank(workdir, runs, hf_config: dict = TINY_QWEN3):
    """Train each (run_name, objective, options) for 3 steps from the init checkpoints and export its
    branches under <run>/export; one process group, megatron's parallel state rebuilt per run (this
    keeps the number of process launches, the slow part on CPU, small)."""
    from megatron.core import parallel_state

    from megatron_wmss import distributed
    from megatron_wmss.training.loop import train

    for run_name, objective, options in runs:
        options = dict(options)
        tp, pp, dist_opt = options.pop("tp", 1), options.pop("pp", 1), options.pop("dist_opt", False)
        run_dir = Path(workdir) / run_name
        cfg = make_config(run_dir, objective, tp, pp, dist_opt, **options)
        distributed.initialize(tp=tp, pp=pp, seed=cfg.training.seed)
        init = {"strong": f"{workdir}/strong", "weak": f"{workdir}/weak"} if objective == "wmss" else \
            {"model": f"{workdir}/strong"}
        result = train(cfg, dataset=ToySFTDataset(), hf_config=hf_config, init=init, run_dir=run_dir)
        result.export(run_dir / "export", hf_config, None)
        parallel_state.destroy_model_parallel()
    distributed.destroy()


def sequence_rank(*calls):
    """Several rank functions one after another in one process (each launch costs seconds of imports on
    CPU): every call is (fn, *args); returns their results in order."""
    return [fn(*args) for fn, *args in calls]


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def load_exported_rank(paths, hf_config: dict = TINY_QWEN3):
    """Parameters of exported model checkpoints, loaded at TP=1/PP=1: {path: {name: tensor}}."""
    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize(seed=1)
    tcfg, arch = transformer_config_from_hf(hf_config, make_vocab_size_divisible_by=8)
    out = {}
    for path in paths:
        model = build_gpt_model(tcfg, arch)
        load_model(model, path)
        out[path] = {n: p.detach().clone() for n, p in model.named_parameters()}
    distributed.destroy()
    return out
