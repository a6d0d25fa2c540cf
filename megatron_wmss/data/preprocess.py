"""One `wmss preprocess` run (megatron_wmss/commands/preprocess.py parses its options): chat rows ->
Megatron indexed SFT dataset + manifest (docs/data.md)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import process as proc
from .indexed import AtomicDatasetWriter
from .schema import REASONS
from .sources import expand_inputs, iter_input, sha256_path

MAX_EXAMPLES = 10  # file:line examples kept per drop reason


def _comma_set(values: list[str]) -> frozenset:
    return frozenset(s.strip() for v in values for s in v.split(",") if s.strip())


def config_from_args(args) -> proc.ProcessConfig:
    if args.max_seq_length is not None and args.max_seq_length < 2:
        raise ValueError("--max-seq-length must be >= 2")
    if args.truncate and args.max_seq_length is None:
        raise ValueError("--truncate needs --max-seq-length")
    if args.workers < 1 or args.chunk_size < 1:
        raise ValueError("--workers and --chunk-size must be >= 1")
    if args.verify_timeout <= 0:
        raise ValueError("--verify-timeout must be > 0")
    return proc.ProcessConfig(
        tokenizer=str(args.tokenizer), chat_template=args.chat_template, eot_token=args.eot_token,
        system_prompt=None if args.no_system_prompt or not args.system_prompt else args.system_prompt,
        input_format=args.input_format, sources=_comma_set(args.sources),
        exclude_sources=_comma_set(args.exclude_sources), require_format=args.require_format,
        verify_answers=args.verify_answers, verify_timeout=args.verify_timeout,
        max_seq_length=args.max_seq_length, truncate=args.truncate,
        allowed_special=tuple(sorted(_comma_set([args.allow_special_in_content]))),
        decode_check=not args.no_decode_check)


class Stats:
    """Counts kept / dropped rows (by reason, with the first file:line examples) and token totals."""

    def __init__(self):
        self.rows_read = self.kept = self.truncated = self.own_system = 0
        self.dropped: dict[str, dict] = {}
        self.lengths: list[int] = []
        self.total_tokens = self.supervised = 0
        self.kept_by_source: Counter = Counter()

    def drop(self, where: str, reason: str, detail: str) -> None:
        entry = self.dropped.setdefault(reason, {"kind": REASONS[reason][0], "count": 0, "first": []})
        entry["count"] += 1
        if len(entry["first"]) < MAX_EXAMPLES:
            entry["first"].append(f"{where}: {detail}" if detail else where)

    def keep(self, kept: proc.Kept) -> None:
        self.kept += 1
        self.truncated += kept.truncated
        self.own_system += kept.own_system
        self.lengths.append(len(kept.ids))
        self.total_tokens += len(kept.ids)
        self.supervised += int(kept.mask.sum())
        self.kept_by_source[kept.source] += 1

    def token_stats(self) -> dict:
        lengths = np.asarray(self.lengths, dtype=np.int64)
        total = int(lengths.sum())
        out = {"total": total, "supervised": self.supervised,
               "supervised_fraction": round(self.supervised / total, 6) if total else 0.0}
        if len(lengths):
            out["per_sample"] = {"min": int(lengths.min()), "max": int(lengths.max()),
                                 "mean": round(float(lengths.mean()), 3),
                                 **{f"p{q}": int(np.percentile(lengths, q, method="nearest")) for q in (50, 90, 99)}}
        return out


def _events(inputs, max_rows):
    n = 0
    for fi, inp in enumerate(inputs):
        for event in iter_input(inp):
            if event[0] == "row":
                if max_rows is not None and n >= max_rows:
                    return
                n += 1
                yield (fi, event[1], "row", event[2])
            else:
                yield (fi, event[1], "error", event[2], event[3])


def _chunks(events, size):
    chunk = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _results(chunks, cfg, workers, processor):
    """(file_index, line, Kept|Dropped) in input order, whatever the number of workers."""
    if workers == 1:
        proc._PROCESSOR = processor
        for chunk in chunks:
            yield from proc.process_chunk(chunk)
        return
    # spawn: workers must not inherit torch/tokenizers thread state; each loads the tokenizer once.
    with mp.get_context("spawn").Pool(workers, initializer=proc.init_worker, initargs=(cfg,)) as pool:
        pending = deque()  # bounded, so a 30 GB input is never queued in memory
        for chunk in chunks:
            pending.append(pool.apply_async(proc.process_chunk, (chunk,)))
            if len(pending) >= 2 * workers + 1:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def _tokenizer_info(path: str, tokenizer) -> dict:
    p = Path(path)
    files = [p] if p.is_file() else [p / n for n in ("tokenizer.json", "tokenizer_config.json") if (p / n).exists()]
    return {"path": str(p.resolve()), "class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
            "sha256": {f.name: sha256_path(str(f))[0] for f in files}}


def _pad_id(tokenizer, eot_id: int) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    ids = tokenizer.backend_tokenizer.encode("<|endoftext|>", add_special_tokens=False).ids
    return ids[0] if len(ids) == 1 else eot_id


def build_manifest(args, cfg, processor, inputs, per_file_kept, stats, seconds, workers) -> dict:
    tokenizer, spec = processor.renderer.tokenizer, processor.spec
    tokens = stats.token_stats()
    return {
        "tokenizer": _tokenizer_info(cfg.tokenizer, tokenizer),
        "chat_template": {"name": spec.name, "template": spec.template, "eot_token": spec.eot,
                          "eot_token_id": processor.renderer.eot_id},
        "system_prompt": cfg.system_prompt,
        "pad_token_id": _pad_id(tokenizer, processor.renderer.eot_id),
        "input_format": cfg.input_format,
        "inputs": [{"path": inp.path, "split": inp.split, "kind": inp.kind, "sha256": inp.sha256,
                    "bytes": inp.bytes, "rows_read": inp.rows_read, "kept": per_file_kept[i]}
                   for i, inp in enumerate(inputs)],
        "filters": {"sources": sorted(cfg.sources), "exclude_sources": sorted(cfg.exclude_sources),
                    "require_format": cfg.require_format, "verify_answers": cfg.verify_answers,
                    "verify_timeout_s": cfg.verify_timeout, "max_seq_length": cfg.max_seq_length,
                    "truncate": cfg.truncate, "allowed_special_in_content": list(cfg.allowed_special),
                    "decode_check": cfg.decode_check, "max_rows": args.max_rows},
        "conventions": {
            "mask": "mask[t] = 1 iff token t is assistant text or the end-of-turn token closing it",
            "sample_id": "row 'id' if present, else 'h-' + sha256[:16] of JSON [[role, content], ...] "
                         "(gsm8k: of ['gsm8k', question, answer]); first occurrence of a duplicate kept",
            "order": "input order (files as given, rows in file order)"},
        "counts": {"rows_read": stats.rows_read, "kept": stats.kept,
                   "dropped": sum(d["count"] for d in stats.dropped.values()),
                   "truncated": stats.truncated, "rows_with_own_system_prompt": stats.own_system,
                   "dropped_by_reason": dict(sorted(stats.dropped.items())),
                   "kept_by_source": dict(sorted(stats.kept_by_source.items()))},
        "tokens": tokens,
        # the only part that differs between runs over the same inputs:
        "run": {"workers": workers, "seconds": round(seconds, 3),
                "rows_per_s": round(stats.rows_read / seconds, 1) if seconds > 0 else None,
                "tokens_per_s": round(tokens["total"] / seconds, 1) if seconds > 0 else None,
                "argv": list(args.argv), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }


def _print_summary(stats: Stats, seconds: float) -> None:
    out = sys.stderr
    dropped = sum(d["count"] for d in stats.dropped.values())
    print(f"rows read {stats.rows_read}, kept {stats.kept}, dropped {dropped}, truncated {stats.truncated}; "
          f"{seconds:.1f}s, {stats.rows_read / max(seconds, 1e-9):.1f} rows/s, "
          f"{stats.total_tokens / max(seconds, 1e-9):.1f} tokens/s (kept)", file=out)
    for reason, d in sorted(stats.dropped.items(), key=lambda kv: -kv[1]["count"]):
        print(f"  {reason:26s} {d['count']:>9d}  first: {d['first'][0]}", file=out)


def run(args) -> int:
    cfg = config_from_args(args)
    inputs = expand_inputs(args.input)
    processor = proc.RowProcessor(cfg)  # also validates tokenizer / template options before any work
    tokenizer = processor.renderer.tokenizer
    writer = AtomicDatasetWriter(args.output_prefix, vocab_size=len(tokenizer))
    stats, seen, per_file_kept = Stats(), set(), [0] * len(inputs)
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(unit=" rows", disable=None, mininterval=1.0, file=sys.stderr)
    try:
        results = _results(_chunks(_events(inputs, args.max_rows), args.chunk_size), cfg, args.workers, processor)
        for fi, line, res in results:
            where = f"{inputs[fi].label}:{line}"
            is_row = res.reason not in ("truncated_zst", "unreadable_file") if isinstance(res, proc.Dropped) else True
            stats.rows_read += is_row
            bar.update(is_row)
            if isinstance(res, proc.Kept) and res.sample_id in seen:
                res = proc.Dropped("duplicate_id", f"id {res.sample_id!r}")
            if isinstance(res, proc.Dropped):
                stats.drop(where, res.reason, res.detail)
                if args.strict and REASONS[res.reason][0] == "invalid":
                    results.close()
                    print(f"error: {where}: {res.reason}: {res.detail} (--strict)", file=sys.stderr)
                    writer.abort()
                    return 1
                continue
            seen.add(res.sample_id)
            for sample in res.samples():  # a pair row stores its chosen, then its rejected sequence
                writer.add(sample.ids, sample.mask, sample.sample_id, sample.source, where)
                stats.keep(sample)
            per_file_kept[fi] += 1
            if stats.kept % 500 == 0:
                tps = stats.total_tokens / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(kept=stats.kept, tokens_per_s=f"{tps:.0f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        _print_summary(stats, seconds)
        if stats.kept == 0:
            print("error: no rows kept (see the drop counts above); nothing written", file=sys.stderr)
            writer.abort()
            return 1
        manifest = build_manifest(args, cfg, processor, inputs, per_file_kept, stats, seconds, args.workers)
        writer.commit(manifest)
        print(f"wrote {args.output_prefix}.{{bin,idx}}, {args.output_prefix}_mask.{{bin,idx}}, "
              f"{args.output_prefix}.ids.jsonl, {args.output_prefix}.manifest.json", file=sys.stderr)
        return 0
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
