"""`wmss diagnose`: the paper's logit diagnostics (App. B.4, Tables 6-7; App. D Eq. 17) of several models
on the same random training samples (launch with torchrun for TP/PP/DP).

  torchrun --nproc_per_node=2 -m megatron_wmss.cli diagnose --config RECIPE.yaml parallel.tp=2 \
      --model weak=ckpt/M0 --model strong_before=ckpt/M1 --model strong_after=runs/x/iter_1/wdjt/export/strong \
      --out runs/x/diagnose

Per model, over the supervised positions of --samples random samples of data.path (default 200, as in
App. B.4): target and distractor logit means, their gap, logit std, centered norm (Eq. 48), max/min
logit, L2 norm, entropy and max prob, computed vocab-parallel from the final hidden states. With the
--weak and --strong models among them: the entropy separation Delta H (App. B.5) and the predicted
lambda_cross of Eq. 17. Writes <out>/diagnose.json and <out>/diagnose.md (docs/diagnostics.md).
"""

from __future__ import annotations

import argparse


def _models(specs: list[str]) -> dict:
    from megatron_wmss.errors import ConfigError

    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model: expected NAME=CHECKPOINT, got {spec!r}")
        if name in models:
            raise ConfigError(f"--model: the name {name!r} is given twice")
        models[name] = path
    return models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wmss diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe (data.path, parallel layout, micro batch size)")
    parser.add_argument("overrides", nargs="*", help="section.option=value")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a model checkpoint to diagnose, repeatable; the order is the tables' order")
    parser.add_argument("--weak", default="weak", help="name of the weak model (Delta H, lambda_cross) [weak]")
    parser.add_argument("--strong", default="strong_before",
                        help="name of the strong model before WD-JT: Delta H, lambda_cross and the reference "
                             "of the tables' Delta columns [strong_before]")
    parser.add_argument("--samples", type=int, default=None, help="random training samples [200, App. B.4]")
    parser.add_argument("--seed", type=int, default=None, help="sample draw seed [training.seed]")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)

    from pathlib import Path

    from megatron_wmss import distributed
    from megatron_wmss.checkpoint import resolve_architecture
    from megatron_wmss.config import load_config
    from megatron_wmss.data import open_sft_dataset
    from megatron_wmss.diagnostics.run import DEFAULT_SAMPLES, diagnose, write_diagnosis
    from megatron_wmss.errors import ConfigError

    models = _models(args.model)
    for name, path in models.items():
        if not Path(path).is_dir():
            raise ConfigError(f"--model {name}: {path} is not a model checkpoint directory")
    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    if samples < 1:
        raise ConfigError("--samples: must be >= 1")
    cfg = load_config(args.config, args.overrides)
    if not cfg.data.path:
        raise ConfigError("data.path: the preprocessed training data to draw the samples from is required")
    hf_config, _ = resolve_architecture(models, cfg.model.hf_path)
    distributed.initialize(tp=cfg.parallel.tp, pp=cfg.parallel.pp, cp=cfg.parallel.cp, seed=cfg.training.seed)
    cfg.data.pack = False  # the samples are single rows
    result = diagnose(cfg, dataset=open_sft_dataset(cfg.data), hf_config=hf_config, models=models,
                      weak=args.weak, strong=args.strong, num_samples=samples,
                      seed=cfg.training.seed if args.seed is None else args.seed)
    write_diagnosis(result, args.out)
    distributed.print_rank0(f"wmss diagnose: wrote {Path(args.out) / 'diagnose.json'}"
                            + ("" if result["lambda_cross"] is None else
                               f"; lambda_cross = {result['lambda_cross']:.3f}, "
                               f"entropy separation = {result['entropy_separation']:+.4f} nats"))
    distributed.destroy()
    return 0
