#!/usr/bin/env python
"""HF <-> megatron checkpoints (Qwen2/2.5, Qwen3, Llama). Same as `wmss convert`; see docs/convert.md.

  python tools/convert_checkpoint.py hf-to-megatron --hf HF_DIR --out CKPT_DIR [--tp N --pp N]
  python tools/convert_checkpoint.py megatron-to-hf --load CKPT_DIR --out HF_DIR [--branch strong|weak]
"""

import sys

from megatron_wmss.commands.convert import main

if __name__ == "__main__":  # required: dist checkpointing's save starts a spawn-context Manager
    sys.exit(main(prog="convert_checkpoint.py"))
