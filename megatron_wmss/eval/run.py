"""One `wmss eval` run (megatron_wmss/commands/eval.py parses its options): generate on the benchmarks,
grade with math-verify, write per-sample files and summary.json; resumes from the sample files."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from megatron_wmss.eval import results as res
from megatron_wmss.eval.benchmarks import (BENCHMARKS, CUSTOM_MAX_NEW_TOKENS, BenchmarkFile, load_benchmark,
                                           load_benchmark_file, resolve_names)
from megatron_wmss.eval.grading import REASONS, Grader, GradingOptions, make_task
from megatron_wmss.eval.metrics import math_avg, summarize_benchmark
from megatron_wmss.eval.prompts import UNSET, effective_template, render, resolve_prompt_spec

PAPER_PASS_K = dict(n=64, temperature=0.7, top_p=0.95, k="1,4,8,16,32,64", benchmarks="aime25,amc23,math500")


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--k {text!r}: expected comma-separated integers") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k {text!r}: every k must be >= 1")
    return ks


def _settings(args) -> dict:
    """Resolve the --paper-pass-k preset against explicit options."""
    preset = PAPER_PASS_K if args.paper_pass_k else {}
    pick = lambda name, default: getattr(args, name) if getattr(args, name) is not None else preset.get(name, default)  # noqa: E731
    files = getattr(args, "benchmark_file", None) or []
    spec = pick("benchmarks", "" if files else "all")  # only the files when they are given alone
    bundled = resolve_names(spec) if spec else []
    if not bundled and not files:
        raise ValueError("--benchmarks selects no benchmark")
    return dict(n=pick("n", 1), temperature=pick("temperature", 0.0), top_p=pick("top_p", 1.0),
                ks=_ks(pick("k", "1")), benchmarks=bundled)


def _benchmark_files(args) -> dict:
    """--benchmark-file [NAME=]PATH options -> {name: BenchmarkFile}, names unique."""
    files = [BenchmarkFile.parse(spec) for spec in args.benchmark_file]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"--benchmark-file: two files are named {next(n for n in names if names.count(n) > 1)!r}; "
                         "give them distinct names with NAME=PATH")
    return {f.name: f for f in files}


def _file_record(bench: BenchmarkFile) -> dict:
    """Path and sha256 of a benchmark file, recorded in run_config.json (resume checks the content)."""
    if not bench.path.is_file():
        raise FileNotFoundError(f"--benchmark-file {bench.path}: file not found")
    return {"path": str(bench.path.resolve()), "sha256": hashlib.sha256(bench.path.read_bytes()).hexdigest()}


def _merge_benchmark_files(out: Path, files: dict, args) -> dict:
    """Benchmark files of earlier runs into this directory plus this run's; a name whose file content
    changed would mix samples of two different sets, so it stops (unless --overwrite)."""
    now = {name: _file_record(f) for name, f in files.items()}
    path = out / res.CONFIG_FILE
    before = {}
    if path.is_file() and not args.overwrite:
        before = json.loads(path.read_text(encoding="utf-8")).get("benchmark_files") or {}
    for name, rec in now.items():
        if name in before and before[name]["sha256"] != rec["sha256"]:
            raise ValueError(f"{path}: benchmark {name!r} was evaluated from a file with other content "
                             f"({before[name]['path']}); use another --output-dir, NAME=PATH with a new name, "
                             "or --overwrite")
    return {**before, **now}


def run(args) -> int:
    from tqdm import tqdm

    from megatron_wmss import __version__
    from megatron_wmss.eval.backends import SamplingConfig, check_model_dir, load_tokenizer, make_backend

    st = _settings(args)
    st["files"] = _benchmark_files(args)
    if args.backend == "vllm":  # fail before anything is written
        from megatron_wmss.compat.optional import require

        require("vllm")
    model_dir = check_model_dir(args.model).resolve()
    out = Path(args.output_dir or Path("runs") / "eval" / model_dir.name)
    system = None if args.no_system_prompt else (UNSET if args.system_prompt is None else args.system_prompt)
    spec = resolve_prompt_spec(args.manifest, args.chat_template, system)
    tokenizer = load_tokenizer(model_dir)
    if spec.train_vocab_size is not None and spec.train_vocab_size != len(tokenizer):
        print(f"wmss eval: warning: --manifest tokenizer has {spec.train_vocab_size} tokens, the model's has "
              f"{len(tokenizer)}: is this the tokenizer the model was trained with?", file=sys.stderr)
    sampling = {"n": st["n"], "temperature": st["temperature"], "top_p": st["top_p"], "seed": args.seed}
    default_tokens = {**{b: BENCHMARKS[b].max_new_tokens for b in st["benchmarks"]},
                      **{b: CUSTOM_MAX_NEW_TOKENS for b in st["files"]}}
    configs = {b: SamplingConfig(args.max_new_tokens or tokens, st["n"], st["temperature"], st["top_p"], args.seed)
               for b, tokens in default_tokens.items()}
    options = GradingOptions(args.grade_timeout, not args.lenient_extraction, args.numeric_rel_tol)
    config = {
        "model": str(model_dir),
        "prompt": {"chat_template": effective_template(spec, tokenizer), "system_prompt": spec.system_prompt,
                   "eot_token": spec.eot_token, "source": spec.source},
        "sampling": sampling,
        "max_new_tokens": args.max_new_tokens,  # None = per-benchmark paper defaults
        "grading": {"timeout_s": options.timeout_s, "require_box": options.require_box,
                    "numeric_rel_tol": options.numeric_rel_tol},
        "backend": args.backend, "wmss_version": __version__,
    }
    files_record = _merge_benchmark_files(out, st["files"], args)  # kept across runs into this directory
    if files_record:
        config["benchmark_files"] = files_record
    if args.overwrite:
        res.discard_outputs(out)
    res.check_or_write_config(out, config, ignore=("grading",) if args.regrade else ())
    if max(st["ks"]) > st["n"]:
        print(f"wmss eval: note: pass@k is only reported for k <= n = {st['n']} "
              f"(skipping k = {[k for k in st['ks'] if k > st['n']]})", file=sys.stderr)
    print(f"wmss eval: {model_dir} -> {out} ({'greedy' if st['temperature'] == 0 else 'sampled'}, "
          f"n={st['n']}, backend={args.backend}; prompt {spec.source})", file=sys.stderr)

    backend = None
    per_bench: dict[str, dict] = {}
    show = not args.no_progress
    with Grader(options, workers=max(0, args.grade_workers)) as grader:
        for name in [*st["benchmarks"], *st["files"]]:
            load = (lambda limit=None, n=name: load_benchmark_file(st["files"][n], limit)) if name in st["files"] \
                else (lambda limit=None, n=name: load_benchmark(n, limit=limit))
            problems = load(args.limit)
            cfg, path = configs[name], res.samples_path(out, name)
            done = res.load_samples(path, cfg.n)
            if args.regrade and done:
                _regrade(done, path, grader, load(), show)
            todo = [(pos, p) for pos, p in enumerate(problems) if p.id not in done]
            chunk = max(1, args.chunk_size or (256 if args.backend == "vllm" else args.batch_size))
            bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc=name, unit="problem",
                       disable=not show, dynamic_ncols=True)
            for start in range(0, len(todo), chunk):
                if backend is None:
                    backend = make_backend(args.backend, model_dir, device=args.device, dtype=args.dtype,
                                           batch_size=args.batch_size, tensor_parallel_size=args.tensor_parallel_size,
                                           gpu_memory_utilization=args.gpu_memory_utilization,
                                           max_model_len=args.max_model_len, seed=args.seed,
                                           enforce_eager=args.enforce_eager,
                                           stop_tokens=[spec.eot_token] if spec.eot_token else [])
                part = todo[start:start + chunk]
                _run_chunk(part, name, cfg, spec, tokenizer, backend, grader, path, show)
                bar.update(len(part))
            bar.close()
            kept = res.load_samples(path, cfg.n)
            records = [r for p in problems for r in kept[p.id]]
            per_bench[name] = {**summarize_benchmark(records, st["ks"]), "max_new_tokens": cfg.max_new_tokens,
                               "limit": args.limit}
    summary = _summary(out, config, st, args, per_bench)
    json_path, md_path = res.write_summary(out, summary)
    print(res.markdown_table(summary))
    print(f"wrote {json_path}, {md_path}, samples in {out / 'samples'}", file=sys.stderr)
    return 0


def _run_chunk(part, name, cfg, spec, tokenizer, backend, grader, path, show) -> None:
    """Generate, grade and append the samples of one chunk of (position, Problem)."""
    from tqdm import tqdm

    rendered = [render(p.problem, spec, tokenizer) for _, p in part]
    gens = backend.generate([ids for _, ids in rendered], cfg, [cfg.seed + pos for pos, _ in part])
    if len(gens) != len(part) or any(len(gs) != cfg.n for gs in gens):
        raise RuntimeError(f"backend returned {[len(gs) for gs in gens]} generations for {len(part)} prompts, "
                           f"expected {cfg.n} each")
    tasks = [make_task(g.text, p.reference, p.answer_type, p.choices) for (_, p), gs in zip(part, gens) for g in gs]
    with tqdm(total=len(tasks), desc=f"{name} grading", unit="sample", leave=False, disable=not show) as gbar:
        grades = grader.grade_many(tasks, progress=gbar)
    records, it = [], iter(grades)
    for ((_, p), (text, _)), gs in zip(zip(part, rendered), gens):
        for i, g in enumerate(gs):
            grade = next(it)
            records.append({"benchmark": name, "id": p.id, "sample": i, "prompt": text, "response": g.text,
                            "extracted": grade.extracted, "correct": grade.correct, "reason": grade.reason,
                            "reference": p.reference, "finish_reason": g.finish_reason, "num_tokens": g.num_tokens})
    res.append_samples(path, records)


def _regrade(done: dict, path: Path, grader: Grader, problems, show: bool) -> None:
    from tqdm import tqdm

    by_id = {p.id: p for p in problems}
    recs = [r for rs in done.values() for r in rs if r["id"] in by_id]
    tasks = [make_task(r["response"], by_id[r["id"]].reference, by_id[r["id"]].answer_type, by_id[r["id"]].choices)
             for r in recs]
    with tqdm(total=len(tasks), desc=f"{path.stem} regrading", unit="sample", leave=False, disable=not show) as bar:
        grades = grader.grade_many(tasks, progress=bar)
    for r, g in zip(recs, grades):
        r.update(extracted=g.extracted, correct=g.correct, reason=g.reason)
    res.write_samples(path, recs)


def _summary(out: Path, config: dict, st: dict, args, per_bench: dict) -> dict:
    previous = {}  # other benchmarks evaluated earlier into this directory with the same fingerprint
    if not (args.overwrite or args.regrade):
        try:
            previous = res.load_summary(out).get("benchmarks", {})
        except (FileNotFoundError, ValueError):
            pass
    benches = {**{k: v for k, v in previous.items() if k not in per_bench}, **per_bench}
    complete = all(b in benches and benches[b]["problems"] == BENCHMARKS[b].rows for b in BENCHMARKS)
    return {
        "model": config["model"], "backend": config["backend"],
        "mode": "greedy" if st["temperature"] == 0 else "sampled",
        "sampling": config["sampling"], "prompt": {k: config["prompt"][k] for k in ("system_prompt", "source")},
        "grading": config["grading"], "limit": args.limit,
        "benchmarks": {k: benches[k] for k in res.order_benchmarks(benches)},
        "math_avg": math_avg(benches), "math_avg_over": res.order_benchmarks(benches), "complete": complete,
        "reasons_legend": list(REASONS), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wmss_version": config["wmss_version"],
    }
