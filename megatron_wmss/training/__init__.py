"""One training loop for both objectives: `sft` (one model) and `wmss` (WD-JT, paper Eq. 5-6)."""
