"""`wmss preprocess` / tools/preprocess_data.py: chat rows -> Megatron indexed SFT dataset + manifest.

    python tools/preprocess_data.py --input am_0.5M.jsonl.zst am_0.9M.jsonl.zst \
        --tokenizer QWEN_DIR --chat-template chatml --output-prefix data/am_math \
        --verify-answers --require-format --max-seq-length 4096 --workers 16

See docs/data.md for formats, filters, drop reasons and the manifest.
"""

from __future__ import annotations

import argparse
import sys

from megatron_wmss.data.chat import DEFAULT_ALLOWED_SPECIAL
from megatron_wmss.data.preprocess import run
from megatron_wmss.data.schema import INPUT_FORMATS
from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmss preprocess", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io_ = p.add_argument_group("input / output")
    io_.add_argument("--input", nargs="+", required=True, metavar="PATH",
                     help=".jsonl, .jsonl.zst, .parquet or HF datasets directories, read in the order given")
    io_.add_argument("--input-format", choices=INPUT_FORMATS, default="am")
    io_.add_argument("--output-prefix", required=True, help="writes PREFIX.bin/.idx, PREFIX_mask.bin/.idx, "
                     "PREFIX.ids.jsonl, PREFIX.manifest.json")
    io_.add_argument("--max-rows", type=int, default=None, help="stop after this many rows (smoke runs)")
    tk = p.add_argument_group("tokenizer and template")
    tk.add_argument("--tokenizer", required=True, help="HF tokenizer directory or tokenizer.json")
    tk.add_argument("--chat-template", default="auto",
                    help="auto | tokenizer | chatml | PATH.jinja (auto: tokenizer's own, else ChatML)")
    tk.add_argument("--eot-token", default=None, help="token closing an assistant turn (None: from the template)")
    tk.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT,
                    help="system message added to rows without one ('' for none)")
    tk.add_argument("--no-system-prompt", action="store_true", help="same as --system-prompt ''")
    tk.add_argument("--allow-special-in-content", default=",".join(DEFAULT_ALLOWED_SPECIAL),
                    help="comma list of special tokens that may appear in message content")
    tk.add_argument("--no-decode-check", action="store_true",
                    help="skip the check that decoded supervised tokens equal the assistant text")
    fl = p.add_argument_group("filters")
    fl.add_argument("--sources", action="append", default=[], metavar="A,B",
                    help="keep only rows whose info.source is listed (repeatable, comma lists)")
    fl.add_argument("--exclude-sources", action="append", default=[], metavar="A,B")
    fl.add_argument("--require-format", action="store_true",
                    help="assistant text must be <think>...</think> <answer>...</answer>")
    fl.add_argument("--verify-answers", action="store_true",
                    help="last \\boxed{} of answer_content must math-verify against info.reference_answer")
    fl.add_argument("--verify-timeout", type=float, default=5.0, help="seconds per row for --verify-answers")
    fl.add_argument("--max-seq-length", type=int, default=None, help="rows with more tokens are dropped")
    fl.add_argument("--truncate", action="store_true", help="truncate over-length rows instead of dropping")
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=int, default=1, help="processes; output is identical for any number")
    run.add_argument("--chunk-size", type=int, default=64, help="rows per task sent to a worker")
    run.add_argument("--strict", action="store_true", help="stop at the first invalid row (file:line)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 1 strict stop / nothing kept, 2 bad options, 130 interrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; temporary files removed, no dataset written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # spawn-safe
    sys.exit(main())
