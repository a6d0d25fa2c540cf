"""Recipe section `w2s`: the settings of `wmss w2s run` (docs/w2s.md). The strong model is the recipe's
`model.hf_path`; the training settings (batch sizes, learning rate, epochs) are the recipe's `training`
section, shared by the three trainings (Stage I SFT, Stage II DPO/ORPO, the full-weak-FT baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_wmss.errors import ConfigError
from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT

VARIANTS = ("weak", "icl", "hybrid")
BACKENDS = ("auto", "transformers", "vllm")


@dataclass
class W2SConfig:
    weak_model: str = ""  # HF directory of the weak model (already fine-tuned on a small gold set)
    questions: str = ""  # JSONL of training questions ({"id"?, "problem"} or chat rows); answers are not read
    limit: Optional[int] = None  # only the first N questions
    # generation: a source with one sample per question is decoded greedily, with several it is sampled
    weak_samples: int = 1  # weak data: solutions per question
    icl_shots: int = 4  # k weak demonstrations in the strong model's prompt
    icl_samples: int = 1  # ICL data: solutions per question
    mplus_samples: int = 8  # Stage II: M_plus samples per question (its confidence)
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0
    backend: str = "auto"  # auto = vllm on GPU when installed, else transformers
    batch_size: int = 8  # transformers backend: prompts generated together
    tensor_parallel_size: int = 1  # vllm backend
    # prompt of generation and training (the same for both): chat template and system message
    chat_template: str = "auto"  # auto = the tokenizer's own, else ChatML (as wmss preprocess)
    system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT  # null = no system message
    # Stage I / Stage II data
    variant: str = "hybrid"  # which consistent solutions M_plus is trained on: weak / icl / hybrid
    stage1_rounds: int = 1  # Stage I rounds; round r > 1 regenerates the ICL data with round r-1's M_plus
    min_confidence: Optional[float] = None  # required: least M_plus confidence for a pair
    objective: str = "dpo"  # Stage II: dpo (reference = M_plus) or orpo
    # optimizer steps of each training (null = training.epochs of its data)
    stage1_steps: Optional[int] = None
    stage2_steps: Optional[int] = None
    baseline_steps: Optional[int] = None
    stage2_lr: Optional[float] = None  # peak learning rate of DPO/ORPO (null = training.lr)
    baseline: bool = True  # also train and evaluate the full-weak-FT baseline
    benchmark_file: Optional[str] = None  # NAME=PATH for `wmss eval --benchmark-file`; null = eval.benchmarks

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks that need no file; `check_ready` checks what a run needs besides."""
        checks = [
            (self.limit is None or self.limit >= 1, "limit", "must be >= 1 (or null)"),
            (self.weak_samples >= 1, "weak_samples", "must be >= 1"),
            (self.icl_shots >= 0, "icl_shots", "must be >= 0"),
            (self.icl_samples >= 1, "icl_samples", "must be >= 1"),
            (self.mplus_samples >= 2, "mplus_samples", "must be >= 2 (confidence is a share of several samples)"),
            (self.temperature > 0, "temperature", "must be > 0 (sources with several samples are sampled)"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1"),
            (self.backend in BACKENDS, "backend", f"one of {'/'.join(BACKENDS)}"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1"),
            (self.variant in VARIANTS, "variant", f"one of {'/'.join(VARIANTS)}"),
            (self.stage1_rounds >= 1, "stage1_rounds", "must be >= 1"),
            (self.min_confidence is None or 0 < self.min_confidence <= 1, "min_confidence", "must be in (0, 1]"),
            (self.objective in ("dpo", "orpo"), "objective", "one of dpo/orpo"),
        ]
        checks += [(getattr(self, n) is None or getattr(self, n) >= 1, n, "must be >= 1 (or null)")
                   for n in ("stage1_steps", "stage2_steps", "baseline_steps")]
        checks.append((self.stage2_lr is None or self.stage2_lr > 0, "stage2_lr", "must be > 0 (or null)"))
        checks.append((self.benchmark_file is None or "=" in self.benchmark_file, "benchmark_file", "expected NAME=PATH"))
        for ok, option, message in checks:
            if not ok:
                raise ConfigError(f"w2s.{option}: {message}")

    def check_ready(self) -> None:
        """What `wmss w2s run` needs that a recipe for other commands may leave out."""
        from pathlib import Path

        if not Path(self.weak_model, "config.json").is_file():
            raise ConfigError(f"w2s.weak_model: {self.weak_model!r} is not a HF model directory (no config.json)")
        if not Path(self.questions).is_file():
            raise ConfigError(f"w2s.questions: {self.questions!r} is not a file (JSONL of training questions)")
        if self.min_confidence is None:
            raise ConfigError("w2s.min_confidence: required (the least share of M_plus samples at the majority "
                              "answer for a question to give a pair); choose it per task")
