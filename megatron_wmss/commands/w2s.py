"""`wmss w2s`: weak-to-strong reasoning (docs/w2s.md).

  wmss w2s run --config examples/w2s_gsm8k_8b.yaml
      Stage I -> Stage II end to end, the full-weak-FT baseline and evaluation (resumable step by step)
  wmss w2s generate --model WEAK_HF --questions train.jsonl --n 4 --temperature 0.7 --output weak.jsonl
      sample file of a model's solutions; with --demonstrations weak.jsonl --shots 4: ICL data
  wmss w2s filter --weak weak.jsonl --icl icl.jsonl --variant hybrid --output stage1_sft.jsonl
      Stage I: keep the questions whose weak and ICL final answers agree -> chat rows
      (then `wmss preprocess --input-format messages`, `wmss train training.objective=sft`)
  wmss w2s pairs --strong mplus.jsonl --weak weak.jsonl --min-confidence 0.75 --output pairs.jsonl
      Stage II: confident M_plus answers vs weak solutions with a different answer -> pair rows
      (then `wmss preprocess --input-format pairs`, `wmss train training.objective=dpo|orpo`)

Sample files hold {"id", "prompt", "samples"} per line; answers are compared with each other by
math-verify, never with a gold answer. filter and pairs print a summary of the verdicts as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _parse(argv):
    parser = argparse.ArgumentParser(prog="wmss w2s", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    run = steps.add_parser("run", help="Stage I -> Stage II end to end from a recipe with a w2s section")
    run.add_argument("--config", required=True, help="YAML recipe")
    run.add_argument("overrides", nargs="*", help="section.option=value")
    run.add_argument("--nproc-per-node", type=int, default=1, help="ranks of each training (torchrun when > 1)")
    _generate_parser(steps.add_parser("generate", help="sample file of a model's solutions (weak, ICL, M_plus)"))
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


def _generate_parser(gen) -> None:
    gen.add_argument("--model", required=True, help="HF model directory")
    gen.add_argument("--questions", required=True, help="JSONL of questions ({id?, problem} or chat rows)")
    gen.add_argument("--output", required=True, help="sample file to write (resumes <output>.partial)")
    gen.add_argument("--limit", type=int, default=None, help="only the first N questions")
    gen.add_argument("--demonstrations", help="weak sample file: in-context demonstrations (ICL data)")
    gen.add_argument("--shots", type=int, default=0, help="demonstrations per prompt (k) [default: %(default)s]")
    gen.add_argument("--n", type=int, default=1, help="samples per question [default: %(default)s]")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy [default: %(default)s]")
    gen.add_argument("--top-p", type=float, default=1.0, help="[default: %(default)s]")
    gen.add_argument("--max-new-tokens", type=int, default=1024, help="[default: %(default)s]")
    gen.add_argument("--seed", type=int, default=0, help="question i is sampled with seed + i [default: %(default)s]")
    gen.add_argument("--chat-template", default="auto", help="as wmss preprocess: auto | chatml | Jinja text or file")
    system = gen.add_mutually_exclusive_group()
    system.add_argument("--system-prompt", default=None, help="[default: the paper's DEFAULT_SYSTEM_PROMPT]")
    system.add_argument("--no-system-prompt", action="store_true", help="no system message")
    gen.add_argument("--backend", choices=("auto", "transformers", "vllm"), default="auto",
                     help="auto = vllm on GPU when installed, else transformers [default: %(default)s]")
    gen.add_argument("--batch-size", type=int, default=8, help="transformers: prompts per batch [default: %(default)s]")
    gen.add_argument("--device", default=None, help="transformers device [default: cuda if available, else cpu]")
    gen.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm [default: %(default)s]")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")


def _generate(args) -> int:
    import torch

    from megatron_wmss.errors import ConfigError
    from megatron_wmss.eval.backends import make_backend
    from megatron_wmss.prompts import DEFAULT_SYSTEM_PROMPT
    from megatron_wmss.w2s.generate import GenerateJob, generate, resolve_backend

    if not Path(args.model, "config.json").is_file():
        raise ConfigError(f"--model: {args.model} is not a HF model directory (no config.json)")
    if args.shots and not args.demonstrations:
        raise ConfigError("--shots: needs --demonstrations (a weak sample file)")
    if args.shots < 0 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--shots must be >= 0, --batch-size and --limit >= 1")
    backend = resolve_backend(args.backend)
    system = None if args.no_system_prompt else (args.system_prompt if args.system_prompt is not None
                                                 else DEFAULT_SYSTEM_PROMPT)
    job = GenerateJob(str(args.model), str(args.questions), str(args.output),
                      dict(max_new_tokens=args.max_new_tokens, n=args.n, temperature=args.temperature,
                           top_p=args.top_p, seed=args.seed), system, args.chat_template, args.limit,
                      args.demonstrations, args.shots)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def factory(eot_token):
        return make_backend(backend, args.model, device=device, batch_size=args.batch_size, seed=args.seed,
                            tensor_parallel_size=args.tensor_parallel_size,
                            stop_tokens=[eot_token] if eot_token else [])

    count = generate(job, factory, chunk_size=256 if backend == "vllm" else args.batch_size,
                     show_progress=not args.no_progress)
    print(json.dumps({"step": "generate", "questions": count, "samples_per_question": args.n, "output": args.output}))
    return 0


def main(argv=None) -> int:
    args = _parse(argv)
    if args.step == "generate":
        return _generate(args)
    if args.step == "run":
        from megatron_wmss.config import load_config
        from megatron_wmss.w2s.run import run

        return run(load_config(args.config, args.overrides), nproc=args.nproc_per_node)
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
