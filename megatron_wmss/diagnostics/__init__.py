"""`wmss diagnose`: the paper's mechanism diagnostics (App. B.4 Tables 6-7, App. B.5, App. D Eq. 17):
per-position logit statistics computed vocab-parallel (statistics.py), the forward pass over a data
sample under TP/PP/DP (run.py) and the markdown tables (report.py). docs/diagnostics.md."""
