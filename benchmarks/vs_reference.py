"""Our WD-JT step against the WD-JT step as the paper's public code does it (issue 17, item 4): step
time, supervised tokens/s and peak memory side by side, on the same model shape, batch and precision.
Targets at the Qwen vocabulary (151,936): ours <= 0.9x the reference's step time and <= 0.6x its peak
memory.

  python benchmarks/vs_reference.py               # CPU default: hidden 256, 2 layers, vocab 151936, seq 256
  python benchmarks/vs_reference.py --hidden 2048 --ffn 6144 --layers 16 --heads 16 --seq 4096 \\
      --micro-batch 1 --micro-batches 2 --rounds 3    # on a GPU (bf16)

The reference, written here from the paper's description (Section 3 and Appendix E: TRL with the
transformers Qwen3 architecture, AdamW, gradient clipping 1.0) rather than from its code: two
`transformers` Qwen3ForCausalLM models built from a Qwen3Config with random weights; per micro-batch
each returns its full logits [b, s, V], the two are stacked and mixed (lam * z_strong + (1 - lam) *
z_weak, paper Eq. 5), `F.cross_entropy` against the labels (prompt positions ignored, -100) gives
the loss, backward through both; then gradient clipping over both and one AdamW step on both models'
parameters. Precision: fp32 on CPU; on a GPU fp32 weights under bf16 autocast (the HF Trainer's
`bf16=True`), against ours with bf16 weights, fp32 main gradients and fp32 Adam states.

Ours is benchmarks/step_time.py's WD-JT variant: megatron-core GPT models built from the same HF
config, the fused, vocab-chunked mixed-logit loss (no [tokens, V] logits), megatron's Adam. Both run
on benchmarks/step_time.py's random batch (the last two thirds of each row supervised). Each variant
runs in its own fresh process with `--threads` torch threads; the variants alternate over `--rounds`
rounds and the fastest round of each counts; wall time and process CPU time are both reported (on a
shared CPU the CPU-time ratio is the one to read, docs/benchmarks.md). Peak memory as in
step_time.py: CUDA max_memory_allocated on GPU, peak RSS growth above the process's state after the
imports and the batch on CPU (so it includes the weights, gradients and optimizer states).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.step_time import RandomSFTData, fastest, measure, peak_bytes, time_steps  # noqa: E402

VARIANTS = {"reference": "reference (HF, full logits, stack, F.cross_entropy)",
            "ours": "ours (megatron, fused mixed-logit loss)"}
LAM = 0.5
LR, CLIP_GRAD = 1e-5, 1.0  # the paper's recipe (Appendix E)


def reference_models(args, device):
    """Two randomly initialized HF Qwen3 causal LMs of the benchmark's shape."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads // 2, head_dim=args.hidden // args.heads,
                         tie_word_embeddings=False, max_position_embeddings=args.seq)
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(Qwen3ForCausalLM(config).to(device).train())
    return models


def reference_loss(strong, weak, tokens, labels, lam=LAM):
    """The reference WD-JT loss of one micro-batch: both models' full logits, stacked and mixed, CE."""
    import torch
    import torch.nn.functional as F

    z_strong = strong(input_ids=tokens).logits
    z_weak = weak(input_ids=tokens).logits
    weights = torch.tensor([lam, 1.0 - lam], dtype=z_strong.dtype, device=z_strong.device).view(2, 1, 1, 1)
    mixed = (torch.stack([z_strong, z_weak]) * weights).sum(0)
    return F.cross_entropy(mixed.reshape(-1, mixed.shape[-1]), labels.reshape(-1), ignore_index=-100)


def measure_reference(args):
    """The reference step in this process: median wall and CPU seconds per step and peak memory."""
    import torch
    import transformers.models.qwen3.modeling_qwen3  # noqa: F401  (imported before the memory baseline)

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    data = RandomSFTData(args.micro_batch * args.micro_batches, args.seq, args.vocab)
    micro_batches = []
    for m in range(args.micro_batches):
        rows = data.rows[m * args.micro_batch:(m + 1) * args.micro_batch]
        tokens = torch.stack([r["tokens"] for r in rows]).to(device)
        labels = torch.stack([r["labels"].masked_fill(r["loss_mask"] == 0, -100) for r in rows]).to(device)
        micro_batches.append((tokens, labels))
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    strong, weak = reference_models(args, device)
    params = list(strong.parameters()) + list(weak.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)

    def run_step(step):
        optimizer.zero_grad(set_to_none=True)
        for tokens, labels in micro_batches:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = reference_loss(strong, weak, tokens, labels)
            (loss / len(micro_batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        optimizer.step()

    seconds, cpu_seconds = time_steps(run_step, args.steps)
    supervised = sum(float((labels != -100).sum()) for _, labels in micro_batches)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": peak_bytes(baseline_kb),
            "supervised_tokens": supervised}


def run_variant(variant, args):
    """One variant in this (fresh) process."""
    return measure_reference(args) if variant == "reference" else measure("wmss", args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=704)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up (median counts)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (reference, ours)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long run of a toy shape (tests): vocab 1000, hidden 32, seq 32, 1 round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.ffn, args.layers, args.heads, args.vocab, args.seq = 32, 64, 1, 4, 1000, 32
        args.steps, args.rounds = 1, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    from megatron_wmss.testing import run_ranks

    rounds = [{v: run_ranks(run_variant, 1, v, args, timeout_s=3600)[0] for v in VARIANTS}
              for _ in range(args.rounds)]
    results = fastest(rounds)
    ref, ours = results["reference"], results["ours"]
    tokens = ours["supervised_tokens"]
    ratios = {"step_time_cpu": ours["cpu_seconds"] / ref["cpu_seconds"],
              "step_time_wall": ours["seconds"] / ref["seconds"],
              "peak_memory": ours["peak_bytes"] / ref["peak_bytes"]}
    print(f"model: qwen3-shaped hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, vocab {args.vocab}; "
          f"batch {args.micro_batches} x {args.micro_batch} x seq {args.seq} ({tokens:.0f} supervised tokens); "
          f"{args.threads} thread(s) per variant; fastest of {args.rounds} interleaved rounds")
    print(f"{'variant':<52} {'wall s/step':>11} {'CPU s/step':>10} {'sup. tok/s':>11} {'peak MiB':>9}")
    for key, result in results.items():
        print(f"{VARIANTS[key]:<52} {result['seconds']:>11.3f} {result['cpu_seconds']:>10.3f} "
              f"{tokens / result['seconds']:>11.1f} {result['peak_bytes'] / 2**20:>9.0f}")
    print(f"ours / reference step time: {ratios['step_time_cpu']:.2f}x CPU time, {ratios['step_time_wall']:.2f}x wall"
          f"  (target <= 0.9)")
    print(f"ours / reference peak memory: {ratios['peak_memory']:.2f}x  (target <= 0.6)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "ratios": ratios}, indent=1))
    return results, ratios


if __name__ == "__main__":
    main()
