"""`wmss eval`: generate on the paper's math benchmarks, grade with math-verify, report pass@1/pass@k.

    wmss eval --model HF_DIR --benchmarks all --output-dir runs/eval/m1            # greedy pass@1
    wmss eval --model HF_DIR --paper-pass-k --backend vllm --output-dir runs/eval/m1-pk
    wmss eval --compare runs/eval/sft runs/eval/wmss                               # per-benchmark deltas
    wmss eval --model HF_DIR --benchmark-file mytask=data/test.jsonl --max-new-tokens 512   # own JSONL set

Rerunning the same command resumes from the per-sample files. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from megatron_wmss.eval import results as res
from megatron_wmss.eval.benchmarks import BENCHMARKS, CUSTOM_MAX_NEW_TOKENS
from megatron_wmss.eval.run import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmss eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF model directory (config.json, weights, tokenizer)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="print per-benchmark deltas B - A between two summary.json files or output dirs")
    p.add_argument("--benchmarks", default=None,
                   help=f"'all' or comma-separated from: {', '.join(BENCHMARKS)} [default: all, or none "
                   "when --benchmark-file is given]")
    p.add_argument("--benchmark-file", action="append", default=[], metavar="[NAME=]PATH",
                   help="also evaluate a JSONL benchmark of your own (repeatable): rows {id, problem, answer, "
                   "answer_type?} or chat rows with info.reference_answer; NAME defaults to the file stem "
                   f"(default max new tokens {CUSTOM_MAX_NEW_TOKENS}, see docs/eval.md)")
    p.add_argument("--output-dir", default=None, help="[default: runs/eval/<model dir name>]")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    g = p.add_argument_group("prompt (must match training)")
    g.add_argument("--manifest", help="data manifest <prefix>.manifest.json with chat_template / system_prompt")
    g.add_argument("--chat-template", help="Jinja template string, a file holding one, or 'chatml'")
    sp = g.add_mutually_exclusive_group()
    sp.add_argument("--system-prompt", default=None, help="system prompt text [default: manifest, else the "
                    "paper's tag-style DEFAULT_SYSTEM_PROMPT]")
    sp.add_argument("--no-system-prompt", action="store_true", help="no system message")
    g = p.add_argument_group("generation")
    g.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                   help="vllm needs a GPU and `pip install 'megatron_wmss[gpu]'` [default: %(default)s]")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="override the per-benchmark limit (paper: 4096; 8192 for AIME25/AMC23)")
    g.add_argument("--n", type=int, default=None, help="samples per problem [default: 1]")
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy [default: 0]")
    g.add_argument("--top-p", type=float, default=None, help="[default: 1.0]")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (+ problem index per prompt) [default: %(default)s]")
    g.add_argument("--k", default=None, help="comma-separated k for pass@k (k <= n) [default: 1]")
    g.add_argument("--paper-pass-k", action="store_true",
                   help="paper App. B.9: n=64, T=0.7, top-p 0.95, k=1,4,8,16,32,64 on AIME25/AMC23/MATH500 "
                   "(explicit options still win)")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="problems generated+graded+saved per step (resume granularity) "
                   "[default: 256 for vllm, --batch-size for transformers]")
    g.add_argument("--batch-size", type=int, default=8, help="transformers backend batch size [default: %(default)s]")
    g.add_argument("--device", default="cpu", help="transformers backend device [default: %(default)s]")
    g.add_argument("--dtype", default="auto", help="float32 | bfloat16 | float16 | auto (float32 on CPU) [default: %(default)s]")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm [default: %(default)s]")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm [default: %(default)s]")
    g.add_argument("--max-model-len", type=int, default=None, help="vllm [default: from the model config]")
    g.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs")
    g = p.add_argument_group("grading")
    g.add_argument("--grade-timeout", type=float, default=5.0, help="seconds per grading call [default: %(default)s]")
    g.add_argument("--grade-workers", type=int, default=min(8, os.cpu_count() or 1), help="grading processes [default: %(default)s]")
    g.add_argument("--lenient-extraction", action="store_true",
                   help="when a response has no \\boxed{}, fall back to math-verify anchors / last number / "
                   "'answer is (X)' (default: strict boxed extraction, as in the paper)")
    g.add_argument("--numeric-rel-tol", type=float, default=1e-4,
                   help="relative tolerance for non-integer numeric references [default: %(default)s]")
    g = p.add_argument_group("run control")
    g.add_argument("--regrade", action="store_true", help="re-grade stored responses with the current grading options")
    g.add_argument("--overwrite", action="store_true",
                   help="discard everything already in --output-dir (samples of all benchmarks, summary)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wmss eval` (argv without the leading 'eval')."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.compare:
            a, b = (res.load_summary(x) for x in args.compare)
            print(res.compare_table(a, b, *args.compare))
            return 0
        if not args.model:
            parser.error("--model is required (or --compare A B)")
        return run(args)
    except KeyboardInterrupt:
        print("\nwmss eval: interrupted; rerun the same command to resume from the sample files", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        if os.environ.get("WMSS_DEBUG"):
            raise
        print(f"wmss eval: error: {err} (WMSS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
