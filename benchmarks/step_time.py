"""WD-JT step time vs SFT step time (target <= 2.05x), and the WD-DS scoring pass's supervised tokens/s
vs a WD-JT step's (target >= 2.5x), on the same model and batch, measured side by side in one run.

  python benchmarks/step_time.py                  # CPU default: hidden 512, 4 layers, vocab 32000, seq 512
  python benchmarks/step_time.py --hidden 2048 --layers 16 --vocab 151936 --seq 4096   # on a GPU

Each variant runs in its own fresh process (megatron_wmss.testing.run_ranks, one rank) so peak memory
is per variant: CUDA max_memory_allocated on GPU, peak RSS growth after the imports on CPU. The variants
run in interleaved rounds (`--rounds`) and the fastest round of each counts, so a change of machine
load between variants does not skew the ratios.
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


def _peak_bytes(baseline_kb):
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) * 1024


def measure(variant, args):
    """One variant in this process: median seconds per step (or per scoring batch) and peak memory."""
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
    times = []
    for step in range(args.steps + 1):
        batches = schedule.micro_batches(step)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
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
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step > 0:  # the first is warm-up
            times.append(time.perf_counter() - start)
    supervised = sum(float(b["loss_mask"].sum()) for b in schedule.micro_batches(0))
    distributed.destroy()
    return {"seconds": statistics.median(times), "peak_bytes": _peak_bytes(baseline_kb), "supervised_tokens": supervised}


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (sft, wmss, scoring)")
    args = parser.parse_args(argv)

    from megatron_wmss.testing import run_ranks

    rounds = [{v: run_ranks(measure, 1, v, args, timeout_s=3600)[0] for v in ("sft", "wmss", "scoring")}
              for _ in range(args.rounds)]
    results = {v: min((r[v] for r in rounds), key=lambda m: m["seconds"]) for v in ("sft", "wmss", "scoring")}
    sft, wmss, scoring = results["sft"], results["wmss"], results["scoring"]
    tokens = sft["supervised_tokens"]
    print(f"model: qwen3-shaped hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, vocab {args.vocab}; "
          f"batch {args.micro_batches} x {args.micro_batch} x seq {args.seq} ({tokens:.0f} supervised tokens); "
          f"fastest of {args.rounds} interleaved rounds")
    print(f"{'variant':<34} {'s/step':>9} {'sup. tok/s':>11} {'peak MiB':>9}")
    names = {"sft": "SFT step (1 model)", "wmss": "WD-JT step (2 models, fused loss)",
             "scoring": "WD-DS scoring pass (forward only)"}
    for key, result in results.items():
        print(f"{names[key]:<34} {result['seconds']:>9.3f} {tokens / result['seconds']:>11.1f} "
              f"{result['peak_bytes'] / 2**20:>9.0f}")
    print(f"WD-JT / SFT step time: {wmss['seconds'] / sft['seconds']:.2f}x  (target <= 2.05)")
    print(f"scoring / WD-JT supervised tokens/s: {wmss['seconds'] / scoring['seconds']:.2f}x  (target >= 2.5)")


if __name__ == "__main__":
    main()
