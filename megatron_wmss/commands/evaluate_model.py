"""Evaluate one trained model of a study in one process: `wmss convert megatron-to-hf`, `wmss eval` and the
held-out loss, each through the `wmss` dispatcher in this process (megatron_wmss.cli) and each skipped when its output exists.

  python -m megatron_wmss.commands.evaluate_model --load CKPT --hf HF_DIR [--heldout-data PREFIX --seq-length S \
      --heldout-out FILE] -- <wmss eval arguments>

Why one process for three commands: a study evaluates dozens of models, and on a CPU machine starting
an interpreter that imports torch, megatron-core and transformers costs seconds each time; the commands
themselves are the production ones, unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    at = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m megatron_wmss.commands.evaluate_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", required=True, help="megatron model checkpoint")
    parser.add_argument("--hf", required=True, help="HF directory to export to")
    parser.add_argument("--heldout-data", help="preprocessed held-out prefix (held-out loss)")
    parser.add_argument("--seq-length", type=int)
    parser.add_argument("--heldout-out", help="JSON file for the held-out loss")
    args = parser.parse_args(argv[:at])
    eval_args = argv[at + 1:]
    from megatron_wmss.cli import main as wmss

    hf, source = Path(args.hf), Path(args.hf) / "SOURCE"  # which checkpoint the HF directory holds
    if not source.is_file() or source.read_text() != str(args.load):
        if wmss(["convert", "megatron-to-hf", "--load", args.load, "--out", str(hf), "--overwrite"]) != 0:
            return 2
        source.write_text(str(args.load))
    if eval_args and wmss(["eval", *eval_args]) != 0:
        return 2
    if args.heldout_data and not Path(args.heldout_out).is_file():
        from megatron_wmss.study.heldout import main as heldout

        return heldout(["--model", str(hf), "--data", args.heldout_data, "--seq-length", str(args.seq_length),
                        "--out", args.heldout_out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
