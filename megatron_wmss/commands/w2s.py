"""`wmss w2s`: weak-to-strong reasoning data steps (docs/w2s.md).

  wmss w2s filter --weak weak.jsonl --icl icl.jsonl --variant hybrid --output stage1_sft.jsonl
      Stage I: keep the questions whose weak and ICL final answers agree -> chat rows
      (then `wmss preprocess --input-format messages`, `wmss train training.objective=sft`)
  wmss w2s pairs --strong mplus.jsonl --weak weak.jsonl --min-confidence 0.75 --output pairs.jsonl
      Stage II: confident M_plus answers vs weak solutions with a different answer -> pair rows
      (then `wmss preprocess --input-format pairs`, `wmss train training.objective=dpo|orpo`)

Inputs are sample files ({"id", "prompt", "samples"} per line); answers are compared with each other by
math-verify, never with a gold answer. A summary of the verdicts is printed as JSON.
"""

from __future__ import annotations

import argparse
import json


def _parse(argv):
    parser = argparse.ArgumentParser(prog="wmss w2s", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    filt = steps.add_parser("filter", help="Stage I: final-answer consistency of weak and ICL data")
    filt.add_argument("--weak", required=True, help="sample file of the weak model's solutions")
    filt.add_argument("--icl", required=True, help="sample file of the strong model's in-context solutions")
    filt.add_argument("--variant", choices=("weak", "icl", "hybrid"), default="hybrid",
                      help="which kept solutions become SFT rows")
    filt.add_argument("--output", required=True, help="chat rows (JSONL) for wmss preprocess")
    pairs = steps.add_parser("pairs", help="Stage II: contrastive pairs from confident M_plus answers")
    pairs.add_argument("--strong", required=True, help="sample file of M_plus's samples (several per question)")
    pairs.add_argument("--weak", required=True, help="sample file of the weak model's solutions")
    pairs.add_argument("--min-confidence", type=float, required=True,
                       help="least share of M_plus samples at the majority answer for a question to give a pair")
    pairs.add_argument("--output", required=True, help="pair rows (JSONL) for wmss preprocess --input-format pairs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    from megatron_wmss.w2s.samples import read_samples, write_jsonl

    if args.step == "filter":
        from megatron_wmss.w2s.consistency import filter_rows

        rows, counts = filter_rows(read_samples(args.weak, "--weak"), read_samples(args.icl, "--icl"), args.variant)
    else:
        from megatron_wmss.w2s.contrast import pair_rows

        rows, counts = pair_rows(read_samples(args.strong, "--strong"), read_samples(args.weak, "--weak"),
                                 args.min_confidence)
    written = write_jsonl(args.output, rows)
    print(json.dumps({"step": args.step, "questions": dict(sorted(counts.items())), "rows": written,
                      "output": args.output}))
    return 0
