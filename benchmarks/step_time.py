"""WD-JT step time vs SFT step time (target <= 2.05x), WD-JT with a frozen weak branch vs SFT (target
<= 1.40x; the floor is ~1.33x since the weak branch runs forward only), and the WD-DS scoring pass's
supervised tokens/s vs a WD-JT step's (target >= 2.5x), on the same model and batch, measured side by
side in one run.

  python benchmarks/step_time.py                  # CPU default: hidden 512, 4 layers, vocab 32000, seq 512
  python benchmarks/step_time.py --hidden 2048 --layers 16 --vocab 151936 --seq 4096   # on a GPU

Each variant runs in its own fresh process (megatron_wmss.testing.run_ranks, one rank) with
`--threads` torch threads (default 1) so peak memory is per variant: CUDA max_memory_allocated on GPU,
peak RSS growth after the imports on CPU. Every step is timed twice: wall time, and the process's CPU
time (time.process_time, all its threads). With one thread the CPU time per step is the figure that
survives a busy machine (other jobs stretch wall time, not this process's CPU time); the targets are
judged on it on CPU (docs/benchmarks.md). The variants run in interleaved rounds (`--rounds`) and the
fastest round of each counts, so a change of machine load between variants does not skew the ratios.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class RandomSFTData:
    """Random token rows, the last two thirds supervised (the SFTDataset interface)."""

    def __init__(self, n, seq, vocab):
        import numpy as np
        import torch

        gen = torch.Generator().manual_seed(0)
        self.rows = []
        for i in range(n):
            ids = torch.randint(0, vocab, (seq + 1,), generator=gen)
            mask = torch.zeros(seq)
            mask[seq // 3:] = 1
            self.rows.append(dict(tokens=ids[:-1], labels=ids[1:], loss_mask=mask, position_ids=torch.arange(seq),
                                  sample_id=f"r{i}"))
        self.sample_ids = [r["sample_id"] for r in self.rows]
        self._np = np

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def epoch_order(self, epoch, phase=0):
        return self._np.random.default_rng([1, epoch, phase]).permutation(len(self.rows))


def peak_bytes(baseline_kb):
    """Peak memory of this process: CUDA max_memory_allocated on GPU, else peak RSS above `baseline_kb`."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) * 1024


def time_steps(run_step, steps):
    """Call run_step(0..steps): the first is warm-up; -> (median wall seconds, median process CPU seconds)
    of the others."""
    import torch

    walls, cpus = [], []
    for step in range(steps + 1):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        run_step(step)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step > 0:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(variant, args):
    """One variant in this process ("sft", "wmss", "wmss_frozen" or "scoring"): median wall and CPU seconds
    per step (or per scoring batch) and peak memory."""
    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss import distributed
    from megatron_wmss.config import load_config
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf
    from megatron_wmss.models.pair import WeakStrongPair
    from megatron_wmss.selection.scoring import _entropy_forward_step
    from megatron_wmss.training.batches import GlobalBatchSchedule
    from megatron_wmss.training.components import build_components
    from megatron_wmss.training.train_module import train_module_for

    torch.set_num_threads(args.threads)
    hf = dict(model_type="qwen3", vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
              num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads // 2,
              head_dim=args.hidden // args.heads, tie_word_embeddings=False, max_position_embeddings=args.seq)
    gbs = args.micro_batch * args.micro_batches
    cfg = load_config(overrides=[f"training.objective={'sft' if variant == 'sft' else 'wmss'}",
                                 f"wmss.freeze_weak={'true' if variant == 'wmss_frozen' else 'false'}",
                                 f"training.global_batch_size={gbs}", f"training.micro_batch_size={args.micro_batch}",
                                 f"data.seq_length={args.seq}", "training.tensorboard=false"])
    distributed.initialize()
    data = RandomSFTData(gbs, args.seq, args.vocab)
    schedule = GlobalBatchSchedule(data, global_batch_size=gbs, micro_batch_size=args.micro_batch, dp_size=1,
                                   dp_rank=0, train_iters=args.steps + 1)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    forward_backward = get_forward_backward_func()
    if variant == "scoring":
        tcfg, arch = transformer_config_from_hf(hf)
        model = WeakStrongPair(build_gpt_model(tcfg, arch), build_gpt_model(tcfg, arch), freeze_weak=True)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        step_fn, forward_only, optimizer = _entropy_forward_step, True, None
    else:
        train_module = train_module_for(cfg)
        parts = build_components(cfg, train_module, hf, {}, schedule.total_steps)
        model, step_fn, forward_only = parts.model, train_module.forward_step, False
        optimizer = parts.optimizer

    def run_step(step):
        batches = schedule.micro_batches(step)
        if forward_only:
            with torch.no_grad():
                forward_backward(forward_step_func=step_fn, data_iterator=iter(batches), model=model,
                                 num_microbatches=len(batches), seq_length=args.seq,
                                 micro_batch_size=args.micro_batch, forward_only=True)
        else:
            model.zero_grad_buffer()
            optimizer.zero_grad()
            forward_backward(forward_step_func=step_fn, data_iterator=iter(batches), model=model,
                             num_microbatches=len(batches), seq_length=args.seq,
                             micro_batch_size=args.micro_batch, forward_only=False)
            optimizer.step()

    seconds, cpu_seconds = time_steps(run_step, args.steps)
    supervised = sum(float(b["loss_mask"].sum()) for b in schedule.micro_batches(0))
    distributed.destroy()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": peak_bytes(baseline_kb),
            "supervised_tokens": supervised}


VARIANTS = {"sft": "SFT step (1 model)", "wmss": "WD-JT step (2 models, fused loss)",
            "wmss_frozen": "WD-JT step, weak frozen", "scoring": "WD-DS scoring pass (forward only)"}


def fastest(rounds):
    """Per variant, the fastest round's wall and CPU time (each on its own) and the least peak memory."""
    return {v: {key: min(r[v][key] for r in rounds) for key in rounds[0][v]} for v in rounds[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--ffn", type=int, default=1408)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant (CPU time is "
                        "comparable across machine load with 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all the variants")
    args = parser.parse_args(argv)

    from megatron_wmss.testing import run_ranks

    rounds = [{v: run_ranks(measure, 1, v, args, timeout_s=3600)[0] for v in VARIANTS} for _ in range(args.rounds)]
    results = fastest(rounds)
    tokens = results["sft"]["supervised_tokens"]
    print(f"model: qwen3-shaped hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, vocab {args.vocab}; "
          f"batch {args.micro_batches} x {args.micro_batch} x seq {args.seq} ({tokens:.0f} supervised tokens); "
          f"{args.threads} thread(s) per variant; fastest of {args.rounds} interleaved rounds")
    print(f"{'variant':<34} {'wall s/step':>11} {'CPU s/step':>10} {'sup. tok/s':>11} {'peak MiB':>9}")
    for key, result in results.items():
        print(f"{VARIANTS[key]:<34} {result['seconds']:>11.3f} {result['cpu_seconds']:>10.3f} "
              f"{tokens / result['seconds']:>11.1f} {result['peak_bytes'] / 2**20:>9.0f}")
    sft, wmss, frozen, scoring = (results[v] for v in VARIANTS)
    for name, num, den, target in (("WD-JT / SFT step time", wmss, sft, "<= 2.05"),
                                   ("WD-JT frozen weak / SFT step time", frozen, sft, "<= 1.40"),
                                   ("scoring / WD-JT supervised tokens/s", wmss, scoring, ">= 2.5")):
        print(f"{name}: {num['cpu_seconds'] / den['cpu_seconds']:.2f}x CPU time, "
              f"{num['seconds'] / den['seconds']:.2f}x wall  (target {target})")


if __name__ == "__main__":
    main()
