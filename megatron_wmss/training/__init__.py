"""Training: one loop (loop.py) for every train module (train_module.py): SFT (sft.py) and WD-JT (wdjt.py,
paper Eq. 5-6)."""
