"""A train module: one way of training (OLMo-core's TrainModule). It owns how its model is built and
loaded, its forward step and loss for megatron's pipeline schedules, and which branches it exports; the
training loop (loop.py) calls these and knows no objective by name. The implementations: sft.py (plain
cross-entropy), wdjt.py (WD-JT, paper Eq. 5-6), the paper's baselines neftune.py and undial.py, and
dpo.py and orpo.py (preference pairs, preference.py);
`train_module_for` picks one from the recipe.

Forward steps return the loss summed over the micro-batch's supervised tokens together with their
count; with `calculate_per_token_loss` megatron divides the gradients by the supervised-token count of
the whole global batch (all micro-batches, all data-parallel ranks), i.e. CE per supervised token. The
preference objectives count pairs instead (a mean over pairs).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch

from megatron_wmss.losses import IGNORE_INDEX


class TrainModule(ABC):
    init_branches: tuple[str, ...]  # the starting model checkpoints it needs, by branch name
    sequences_per_sample: int = 1  # rows of the model's batch per dataset item (2 for a preference pair)
    count_name: str = "supervised_tokens"  # what the loss is averaged over (logged with this name)

    @abstractmethod
    def build_model(self, tcfg, arch, init: dict):
        """(module, finalize_model_grads function): the model(s) built from `tcfg`/`arch` with the
        weights of the checkpoints in `init` (branch -> directory) loaded."""

    @abstractmethod
    def forward_step(self, data_iterator, model):
        """megatron's forward_step_func: (output tensor, loss function of it)."""

    @abstractmethod
    def branches(self, module) -> dict:
        """The trained model(s) to export, by name, from the unwrapped module."""

    def begin_step(self, step: int) -> None:
        """Called by the loop before each optimizer step (0-based), also after a resume: modules whose
        noise depends on the step (NEFTune, UNDIAL) key it on this."""


def sample_generator(*keys) -> torch.Generator:
    """A CPU generator seeded from `keys` (e.g. training seed, step, sample id, stream name): noise drawn
    per sample from it is the same at every TP/PP/DP layout and after a resume."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def masked_labels(batch: dict) -> torch.Tensor:
    """[s, b] labels with unsupervised positions set to IGNORE_INDEX."""
    return torch.where(batch["loss_mask"] > 0, batch["labels"], IGNORE_INDEX).transpose(0, 1).contiguous()


def reduced(loss_sum, mask, **diagnostics):
    """(loss, num_tokens, logged) in megatron's 3-tuple loss_func convention; every logged quantity is
    a (sum, supervised tokens) pair that the loop turns into a per-token mean."""
    num_tokens = mask.sum().to(torch.int)
    logged = {"loss": torch.stack([loss_sum.detach(), mask.sum()])}
    for name, value in diagnostics.items():
        logged[name] = torch.stack([value.detach(), mask.sum()])
    return loss_sum, num_tokens, logged


OBJECTIVES = ("sft", "wmss", "neftune", "undial", "dpo", "orpo")  # training.objective


def train_module_for(cfg) -> TrainModule:
    """The train module of `training.objective` (OBJECTIVES), configured from the recipe."""
    from megatron_wmss.training.neftune import NEFTune
    from megatron_wmss.training.dpo import DPO
    from megatron_wmss.training.orpo import ORPO
    from megatron_wmss.training.sft import SFT
    from megatron_wmss.training.undial import UNDIAL
    from megatron_wmss.training.wdjt import WDJT

    modules = {"sft": SFT, "wmss": WDJT, "neftune": NEFTune, "undial": UNDIAL, "dpo": DPO, "orpo": ORPO}
    return modules[cfg.training.objective].from_recipe(cfg)


def build_pair(tcfg, arch, strong_init=None, weak_init=None, *, freeze_weak: bool):
    """(WeakStrongPair, finalize_pair_grads) for the paired train modules (WD-JT, DPO, UNDIAL): two GPT
    models of one architecture, each loaded from its megatron checkpoint directory when one is given."""
    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.models.build import build_gpt_model
    from megatron_wmss.models.pair import WeakStrongPair, finalize_pair_grads

    strong, weak = build_gpt_model(tcfg, arch), build_gpt_model(tcfg, arch)
    for branch, directory in ((strong, strong_init), (weak, weak_init)):
        if directory:
            load_model(branch, directory)
    return WeakStrongPair(strong, weak, freeze_weak=freeze_weak), finalize_pair_grads
