"""`wmss study`: a fair, step-matched comparison of WMSS against plain SFT and its controls (docs/study.md)."""
