"""`wmss quickstart`: the whole WMSS pipeline on one CPU box in minutes.

  1. task        multi-step arithmetic word problems as AM-schema chat rows, train / held-out test split
  2. tokenizer   byte-level BPE trained on the task text, saved as a HF tokenizer with a ChatML template
  3. base model  tiny Qwen3 HF model, pre-trained briefly on plain (unlabelled) task text -> M0
  4. preprocess  `wmss preprocess`: chat rows -> indexed .bin/.idx with assistant-only loss masks
  5. WMSS        `wmss run`: HF -> megatron, Phase 1 SFT, WD-DS, WD-JT, export to HF
  6. baseline    `wmss run --baseline sft`: SFT from M0 for as many optimizer steps as WMSS's Phase 1 +
                 WD-JT (step-matched: wmss.step_matched), export to HF
  7. eval        `wmss eval --benchmark-file` on the held-out problems (math-verify grading): WMSS and
                 the SFT baseline, plus M0 and M1 (Phase 1 SFT, exported with `wmss convert`) for context
  8. report      results table, PNG (loss curves, WD-DS entropies), report.md and results.json in --out

Steps 4-7 are the production commands (the same code a cluster run uses). A second run with the same
--out skips every finished step and resumes unfinished ones. See docs/quickstart.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from megatron_wmss.quickstart.steps import (DEFAULT_RECIPE, EVALUATED, State, recipe_value, say, step_base_model,
                                           step_eval, step_export_m1, step_preprocess, step_report, step_runs,
                                           step_task, step_tokenizer)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmss quickstart", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="run directory (rerun with the same one to resume)")
    p.add_argument("--seed", type=int, default=1234, help="task, tokenizer, M0 and training seed")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size of `wmss run` (CPU processes)")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe for both `wmss run` calls")
    p.add_argument("--arch", choices=("qwen3", "gemma3"), default="qwen3",
                   help="M0's architecture: tiny Qwen3, or tiny Gemma-3 text (sliding-window + global layers)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="extra recipe override for both runs (repeatable)")
    g = p.add_argument_group("size (the defaults take ~4.5 minutes on 2 idle CPU cores)")
    g.add_argument("--num-train", type=int, default=2000, help="training problems (|D|)")
    g.add_argument("--num-test", type=int, default=200, help="held-out problems")
    g.add_argument("--pretrain-docs", type=int, default=16000, help="unlabelled documents for M0")
    g.add_argument("--pretrain-steps", type=int, default=150, help="M0 pre-training steps")
    g.add_argument("--hidden-size", type=int, default=128)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--ffn-size", type=int, default=384)
    g.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary budget (fewer if the text "
                   "runs out of merges)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="evaluation generation limit")
    g.add_argument("--eval-batch-size", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from megatron_wmss.quickstart.base_model import BaseModelConfig
    from megatron_wmss.quickstart.task import TaskConfig

    if args.tp < 1:
        raise SystemExit("wmss quickstart: --tp must be >= 1")
    if not Path(args.recipe).is_file():
        raise SystemExit(f"wmss quickstart: recipe {args.recipe} not found (run from a clone of the repository, "
                         "or pass --recipe)")
    args.recipe = str(Path(args.recipe).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    task_cfg = TaskConfig(num_train=args.num_train, num_test=args.num_test, seed=args.seed)
    model_cfg = BaseModelConfig(hidden_size=args.hidden_size, num_layers=args.layers,
                                intermediate_size=args.ffn_size, steps=args.pretrain_steps, seed=args.seed)
    max_len = recipe_value(args, "data", "seq_length")
    settings = {"task": asdict(task_cfg), "base_model": asdict(model_cfg), "pretrain_docs": args.pretrain_docs,
                "vocab_size": args.vocab_size, "tp": args.tp, "recipe": Path(args.recipe).read_text(),
                "overrides": args.set, "max_seq_length": max_len, "max_new_tokens": args.max_new_tokens}
    if args.arch != "qwen3":  # recorded only when not the default, so default runs' settings stay as before
        settings["arch"] = args.arch
    state = State(out, settings)
    t0 = time.monotonic()
    say(f"run directory {out} (seed {args.seed}, tp {args.tp})")
    state.record("task", step_task(out, task_cfg, args.pretrain_docs))
    state.record("tokenizer", step_tokenizer(out, args.vocab_size))
    state.record("M0 pre-training (plain task text)", step_base_model(out, model_cfg, args.arch))
    state.record("wmss preprocess", step_preprocess(out, max_len))
    step_runs(args, out, state)
    state.record("M1 export to HF", step_export_m1(out))
    for name in EVALUATED:
        state.record(f"eval {EVALUATED[name][1]}", step_eval(args, out, name))
    state.save()
    result = step_report(args, out, state, settings, argv)
    print()
    print(result["table"])
    say(f"this invocation took {time.monotonic() - t0:.0f} s; report: {out / 'report.md'}, "
         f"{out / 'report.png'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
