#!/usr/bin/env python
"""Chat rows (AM-1.4M, GSM8K, ...) -> Megatron indexed SFT dataset. Same as `wmss preprocess`; see docs/data.md."""

import sys

from megatron_wmss.commands.preprocess import main

if __name__ == "__main__":  # required: the worker pool uses the spawn start method
    sys.exit(main())
