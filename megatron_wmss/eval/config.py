"""Evaluation settings of a recipe (section `eval`): what `wmss run` and `wmss study` pass to `wmss eval`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_wmss.errors import ConfigError
from megatron_wmss.eval.benchmarks import resolve_names


@dataclass
class EvalConfig:
    enabled: bool = False  # `wmss run` evaluates the final model when true
    benchmarks: list = field(default_factory=lambda: [
        "math500", "gsm8k", "aime25", "amc23", "svamp", "mawps", "aqua"])
    backend: str = "auto"  # auto = vllm on GPU, transformers on CPU
    max_new_tokens: Optional[int] = None  # None = the paper's limits: 4096, 8192 for AIME25 / AMC23
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    pass_at_k: list = field(default_factory=lambda: [1])
    limit: Optional[int] = None  # evaluate only the first N problems of each benchmark
    batch_size: int = 8  # transformers backend: prompts generated together
    grade_workers: Optional[int] = None  # math-verify grading processes (null = up to 8)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.backend in ("auto", "vllm", "transformers"), "backend", "one of auto/vllm/transformers"),
            (self.num_samples >= 1, "num_samples", "must be >= 1"),
            (self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1 (or null)"),
            (self.temperature >= 0, "temperature", "must be >= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (self.limit is None or self.limit >= 1, "limit", "must be >= 1 (or null)"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.grade_workers is None or self.grade_workers >= 1, "grade_workers", "must be >= 1 (or null)"),
        ]
        for ok, option, message in checks:
            if not ok:
                raise ConfigError(f"eval.{option}: {message}")
        try:
            resolve_names(self.benchmarks)
        except ValueError as err:
            raise ConfigError(f"eval.benchmarks: {err}") from None
        if not all(isinstance(k, int) and 1 <= k <= self.num_samples for k in self.pass_at_k):
            raise ConfigError(f"eval.pass_at_k: each k must be an integer in [1, eval.num_samples={self.num_samples}]")
