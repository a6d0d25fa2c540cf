"""WD-DS (paper Section 4.2, Eq. 7-9): entropy scoring of weak and strong, weights, active-set draw."""

from megatron_wmss.selection.weights import FORMULAS, sample_active_set, selection_weights

__all__ = ["FORMULAS", "sample_active_set", "selection_weights"]
