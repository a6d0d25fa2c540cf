"""Peak memory and time of forward+backward of the WMSS mixed-logit loss (paper Eq. 5-6), one table.

Every variant starts from the final hidden states of both models `[tokens, h]` and their output-layer
weights `[V, h]` (TP = 1) and returns gradients to all four, so the output-layer GEMMs are included:

  (a) reference-code approach: full logits of both models, torch.stack, mix, F.cross_entropy
  (b) mixed_logit_cross_entropy on the materialized logits
  (m) megatron-core vocab_parallel_cross_entropy on the materialized mix (context row)
  (c) mixed_linear_cross_entropy, fused and token-chunked

Each variant runs in a fresh process (so one's allocations cannot hide another's). Peak memory is the
high-water mark above what existed before the step (inputs and weights): on CUDA
torch.cuda.max_memory_allocated, on CPU the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs). It includes the gradients the step returns (dW of both models, dh of both),
which every variant must produce; the "peak - returned grads" column subtracts them (for (a), (b)
and (m) that understates their working memory when their peak comes before the gradients exist).

    python benchmarks/mixed_loss.py                              # CPU: 2048 tokens, hidden 1024, fp32
    python benchmarks/mixed_loss.py --tokens 4096 --hidden 2560 --dtype bf16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "a": "reference: full logits, stack, mix, F.cross_entropy",
    "b": "mixed_logit_cross_entropy on materialized logits",
    "m": "megatron vocab_parallel_cross_entropy on materialized mix",
    "c": "mixed_linear_cross_entropy (fused, chunked)",
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class _PeakMemory:
    def __init__(self, device):
        self.device = device

    def start(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
                f.write("5")
            self.base = _rss_kib("VmRSS") * 1024

    def peak(self) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return _rss_kib("VmHWM") * 1024 - self.base


def _step(variant, hs, ws, hw, ww, labels, weights, lam, chunk_size):
    import torch
    import torch.nn.functional as F

    from megatron_wmss.losses import mixed_linear_cross_entropy, mixed_logit_cross_entropy

    if variant == "a":
        logits = torch.stack([hs @ ws.t(), hw @ ww.t()])
        mixed = lam * logits[0] + (1 - lam) * logits[1]
        loss = F.cross_entropy(mixed.float(), labels, ignore_index=-100, reduction="none")
    elif variant == "b":
        loss = mixed_logit_cross_entropy(hs @ ws.t(), hw @ ww.t(), labels, lam, chunk_size=chunk_size)
    elif variant == "m":
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        mixed = lam * (hs @ ws.t()) + (1 - lam) * (hw @ ww.t())
        loss = vocab_parallel_cross_entropy(mixed, labels.clamp_min(0)) * (labels != -100)
    else:
        loss = mixed_linear_cross_entropy(hs, ws, hw, ww, labels, lam, chunk_size=chunk_size)
    grads = torch.autograd.grad((loss * weights).sum(), [hs, ws, hw, ww])
    return loss.detach().float(), grads


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    if args.variant == "m":
        from megatron_wmss import distributed

        distributed.initialize(tp=1)
    gen = torch.Generator().manual_seed(0)
    n, h, v = args.tokens, args.hidden, args.vocab

    def leaf(*shape, scale):
        return (scale * torch.randn(*shape, generator=gen)).to(device, dtype).requires_grad_()

    hs, hw = leaf(n, h, scale=1.0), leaf(n, h, scale=1.0)
    ws, ww = leaf(v, h, scale=h ** -0.5 * 4), leaf(v, h, scale=h ** -0.5 * 4)
    labels = torch.randint(0, v, (n,), generator=gen).to(device)
    labels[torch.rand(n, generator=gen).to(device) < 0.1] = -100  # some prompt tokens
    weights = torch.full((n,), 1.0 / n, device=device)
    mem = _PeakMemory(device)
    mem.start()
    t0 = time.perf_counter()
    loss, grads = _step(args.variant, hs, ws, hw, ww, labels, weights, args.lam, args.chunk_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = mem.peak()
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    torch.save(loss.cpu(), args.loss_out)
    return dict(variant=args.variant, times=[elapsed], peak_bytes=peak, grad_bytes=grad_bytes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=151936, help="Qwen vocabulary")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk for (b) and (c)")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds over all variants (one step per variant per round); the table shows the fastest")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--variants", default="abmc")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--loss-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(worker(args)))
        return
    import tempfile

    import torch

    # Rounds interleave the variants (a, b, m, c, a, b, ...), each step in a fresh process, so a change
    # in machine load between variants shows up in every variant instead of skewing one ratio.
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for v in args.variants:
                cmd = [sys.executable, os.path.abspath(__file__), "--variant", v, "--loss-out", f"{tmp}/{v}.pt"]
                for name in ("tokens", "hidden", "vocab", "dtype", "device", "lam", "threads"):
                    cmd += [f"--{name}", str(getattr(args, name))]
                if args.chunk_size:
                    cmd += ["--chunk-size", str(args.chunk_size)]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                if v in results:
                    r["times"] = results[v]["times"] + r["times"]
                    r["peak_bytes"] = max(r["peak_bytes"], results[v]["peak_bytes"])
                r["time_s"] = min(r["times"])
                r["loss"] = torch.load(f"{tmp}/{v}.pt")
                results[v] = r
    base = results.get("a")
    print(f"# mixed loss fwd+bwd: tokens={args.tokens} hidden={args.hidden} vocab={args.vocab} dtype={args.dtype} "
          f"device={args.device} lam={args.lam} threads={args.threads} chunk_size={args.chunk_size or 'auto'} "
          f"rounds={args.rounds} (fastest step shown); torch {torch.__version__}")
    print("| variant | peak memory | vs (a) | peak - returned grads | vs (a) | time | vs (a) | vs (b) "
          "| max rel. loss diff vs (a) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    gib = 2 ** 30
    for v, r in results.items():
        excl = r["peak_bytes"] - r["grad_bytes"]
        row = [f"({v}) {VARIANTS[v]}", f"{r['peak_bytes'] / gib:.2f} GiB", "", f"{excl / gib:.2f} GiB", "",
               f"{r['time_s']:.2f} s", "", "", ""]
        if base:
            bexcl = base["peak_bytes"] - base["grad_bytes"]
            row[2] = f"{r['peak_bytes'] / base['peak_bytes']:.1%}"
            row[4] = f"{excl / bexcl:.1%}"
            row[6] = f"{r['time_s'] / base['time_s']:.2f}x"
            diff = (r["loss"].double() - base["loss"].double()).abs().max() / base["loss"].double().abs().max()
            row[8] = f"{diff.item():.1e}"
        if "b" in results:
            row[7] = f"{r['time_s'] / results['b']['time_s']:.2f}x"
        print("| " + " | ".join(row) + " |")
    g = next(iter(results.values()))["grad_bytes"]
    print(f"\nreturned gradients (dW_s, dW_w, dh_s, dh_w), identical in every variant: {g / gib:.2f} GiB")


if __name__ == "__main__":
    main()
