"""WD-DS settings (recipe section `wmss`): the Eq. 9 coefficients, the formula, the draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_wmss.errors import ConfigError
from megatron_wmss.selection.weights import FORMULAS


@dataclass
class SelectionConfig:
    alpha: float = 0.1  # Eq. 9 weight of [-dH]_+
    beta: float = 0.8  # Eq. 9 weight of H(strong)
    gamma: float = 0.1  # Eq. 9 weight of [dH]_+
    selection_formula: str = "paper"  # "paper" (Eq. 9) or "reference" (public reference code)
    dedupe: bool = True  # Section 4.2: duplicates removed from the drawn active set
    num_draws: Optional[int] = None  # default |D|

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"wmss.{name}: must be >= 0")
        if not self.alpha + self.beta + self.gamma > 0:
            raise ConfigError("wmss.alpha: alpha + beta + gamma must be > 0")
        if self.selection_formula not in FORMULAS:
            raise ConfigError(f"wmss.selection_formula: one of {'/'.join(FORMULAS)}")
        if self.num_draws is not None and self.num_draws < 1:
            raise ConfigError("wmss.num_draws: must be >= 1")
