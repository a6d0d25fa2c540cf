"""GPU acceptance run: every GPU path of megatron_wmss once, on one node, into one JSON report.

  bash benchmarks/gpu_acceptance.sh [--out runs/gpu_acceptance]     # one H100/H200: < 8 minutes (target)
  python benchmarks/gpu_acceptance.py --cpu-smoke --out /tmp/acc     # no GPU: the tiny-model parts only

Checks, each recorded as pass / fail / skipped with its result or error (one failing check never stops
the others; a check whose input another check failed to make is skipped and says which):

  te_layer_spec_bf16 / te_layer_spec_fp8  tiny GPTModel with the Transformer Engine layer spec, forward +
                                          backward in bf16, then with model.fp8=hybrid (compute capability >= 8.9)
  tiny_setup                              task rows, BPE tokenizer, tiny Qwen3 M0 (HF), `wmss preprocess`
  wmss_run_tp1                            `wmss run` (K=1, 3 steps per phase, bf16 on GPU): HF -> megatron,
                                          SFT, WD-DS, WD-JT, export; then, read from its run directory:
  wdjt_tp1 / wdds_scoring / hf_export     the WD-JT phase's metrics, the scoring pass's active set, the
                                          exported HF model loaded with transformers (finite logits)
  wdjt_tp2                                the same `wmss run` at parallel.tp=2 under torchrun (>= 2 GPUs)
  vllm_gsm8k                              `wmss eval --backend vllm` of the exported tiny model on 20 GSM8K
                                          problems (the CPU smoke uses transformers on 2 problems)
  mixed_loss_bf16                         benchmarks/mixed_loss.py at 4,096 tokens x hidden 2,560 in bf16
  wdjt_1b_bf16 / wdjt_1b_fp8              WD-JT tokens/s and MFU of a ~1B Qwen3-shaped pair (CPU smoke: a
                                          tiny shape in bf16, no MFU)

The report (<out>/report.json) holds the environment (GPU, torch / TE / vLLM versions), each check's
status, seconds and result, and the total wall time. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # step_time.RandomSFTData
sys.path.insert(0, str(REPO))

# Dense peak TFLOP/s (bf16, fp8) from NVIDIA's data sheets, matched on the device name (first match).
PEAK_TFLOPS = (("H100 PCIe", 756.0, 1513.0), ("H100", 989.4, 1978.9), ("H200", 989.4, 1978.9))
ONE_B = dict(hidden=2048, ffn=5632, layers=16, heads=16, vocab=151936, seq=4096)  # ~1.4B with the output layer
TINY = dict(hidden=64, ffn=128, layers=2, heads=4, vocab=512, seq=64)


class Skipped(Exception):
    """The check cannot run here (no CUDA, one GPU, missing package, or an input check failed)."""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _needs_cuda() -> None:
    if not _cuda():
        raise Skipped("no CUDA")


def _needs(module: str) -> None:
    from megatron_wmss.compat.optional import available

    if not available(module):
        raise Skipped(f"{module} not importable")


def _wmss(*args: str, log: Path, torchrun: int = 0, timeout: float = 600) -> None:
    """Run a `wmss` command (under torchrun with `torchrun` processes), its output to `log`."""
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}"] if torchrun else \
        [sys.executable]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(log, "w") as out:
        proc = subprocess.run([*launcher, "-m", "megatron_wmss.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env=env, timeout=timeout, cwd=REPO)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"wmss {args[0]} exited with {proc.returncode}; last output:\n{tail}")


# ---- Transformer Engine layer spec ------------------------------------------------------------------

def _te_step_rank(fp8: str | None) -> dict:
    """Build a tiny GPTModel with the TE spec in bf16 (optionally FP8) and run forward + backward."""
    import torch

    from megatron_wmss import distributed
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    distributed.initialize(seed=1)
    hf = dict(model_type="qwen3", vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=128)
    tcfg, arch = transformer_config_from_hf(hf, params_dtype="bf16", transformer_impl="transformer_engine", fp8=fp8)
    model = build_gpt_model(tcfg, arch)
    tokens = torch.randint(0, 512, (2, 64), device="cuda")
    positions = torch.arange(64, device="cuda").expand(2, 64)
    loss = model(tokens, positions, None, labels=tokens).float().mean()
    loss.backward()
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
    distributed.destroy()
    return {"loss": loss.item(), "grads_finite": grads_finite, "layer_impl": arch.transformer_impl,
            "param_dtype": str(next(model.parameters()).dtype)}


def check_te_layer_spec(fp8: str | None):
    def run() -> dict:
        import torch

        from megatron_wmss.testing import run_ranks

        _needs_cuda()
        _needs("transformer_engine.pytorch")
        if fp8 and torch.cuda.get_device_capability() < (8, 9):
            raise Skipped(f"FP8 needs compute capability >= 8.9, this GPU has {torch.cuda.get_device_capability()}")
        result = run_ranks(_te_step_rank, 1, fp8, timeout_s=300)[0]
        if not (result["grads_finite"] and result["loss"] == result["loss"]):
            raise RuntimeError(f"non-finite loss or gradients: {result}")
        return result
    return run


# ---- the tiny pipeline: setup, `wmss run`, what its run directory shows, evaluation --------------------

def check_tiny_setup(work: Path):
    def run() -> dict:
        from megatron_wmss.commands.preprocess import main as preprocess
        from megatron_wmss.quickstart import steps as quickstart
        from megatron_wmss.quickstart.base_model import BaseModelConfig
        from megatron_wmss.quickstart.task import TaskConfig

        quickstart.step_task(work, TaskConfig(num_train=64, num_test=8), num_docs=64)
        quickstart.step_tokenizer(work, vocab_size=512)
        quickstart.step_base_model(work, BaseModelConfig(hidden_size=64, num_layers=2, head_dim=16,
                                                         intermediate_size=128, steps=5, batch_size=8))
        if not (work / "data" / "train.manifest.json").is_file() and preprocess(quickstart.preprocess_argv(work, 160)):
            raise RuntimeError("wmss preprocess failed")
        return {"hf_model": str(work / "base_model"), "data": str(work / "data" / "train")}
    return run


def run_recipe(work: Path, run_dir: Path, tp: int) -> list[str]:
    """`wmss run` arguments: the quickstart recipe on the tiny setup, 3 steps per phase, bf16 on GPU."""
    return ["run", "--config", str(REPO / "examples" / "quickstart" / "recipe.yaml"),
            f"model.hf_path={work / 'base_model'}", f"data.path={work / 'data' / 'train'}", f"run_dir={run_dir}",
            f"model.params_dtype={'bf16' if _cuda() else 'fp32'}", "wmss.sft_steps=3", "wmss.wdjt_steps=3", f"parallel.tp={tp}"]


def check_wmss_run(work: Path, report: dict, tp: int):
    def run() -> dict:
        _needs_input(report, "tiny_setup")
        if tp > 1:
            import torch

            _needs_cuda()
            if torch.cuda.device_count() < tp:
                raise Skipped(f"needs {tp} GPUs, this node has {torch.cuda.device_count()}")
        run_dir = work / f"run_tp{tp}"
        _wmss(*run_recipe(work, run_dir, tp), log=work / f"wmss_run_tp{tp}.log", torchrun=tp if tp > 1 else 0)
        return _wdjt_metrics(run_dir)
    return run


def _needs_input(report: dict, check: str) -> None:
    status = report["checks"].get(check, {}).get("status")
    if status != "pass":
        raise Skipped(f"needs {check} (status: {status})")


def _wdjt_metrics(run_dir: Path) -> dict:
    lines = (run_dir / "iter_1" / "wdjt" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    losses = [m["loss"] for m in metrics]
    if not all(abs(x) < float("inf") for x in losses):
        raise RuntimeError(f"non-finite WD-JT loss: {losses}")
    return {"steps": len(metrics), "losses": losses, "last": metrics[-1]}


def check_from_run_dir(work: Path, report: dict, what: str):
    def run() -> dict:
        _needs_input(report, "wmss_run_tp1")
        run_dir = work / "run_tp1"
        if what == "wdjt":
            return _wdjt_metrics(run_dir)
        if what == "scoring":
            summary = json.loads((run_dir / "iter_1" / "select" / "summary.json").read_text())
            return {k: summary[k] for k in ("num_samples", "active_set_size", "selected_fraction") if k in summary}
        return _load_hf(run_dir / "wmss_hf")
    return run


def _load_hf(hf_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    ids = AutoTokenizer.from_pretrained(hf_dir)("1 + 2 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        raise RuntimeError("the exported model gives non-finite logits")
    return {"hf_dir": str(hf_dir), "parameters": sum(p.numel() for p in model.parameters())}


def check_eval(work: Path, report: dict):
    def run() -> dict:
        _needs_input(report, "hf_export")
        hf_dir, out = work / "run_tp1" / "wmss_hf", work / "eval_gsm8k"
        if _cuda():
            _needs("vllm")
            backend, limit, max_new = "vllm", 20, 256
        else:  # the CPU smoke: the same command through transformers, 2 problems
            backend, limit, max_new = "transformers", 2, 8
        _wmss("eval", "--model", str(hf_dir), "--output-dir", str(out), "--benchmarks", "gsm8k", "--backend", backend,
              "--limit", str(limit), "--max-new-tokens", str(max_new),
              "--manifest", str(work / "data" / "train.manifest.json"), log=work / "eval_gsm8k.log")
        gsm8k = json.loads((out / "summary.json").read_text())["benchmarks"]["gsm8k"]
        return {"backend": backend, **gsm8k}
    return run


# ---- benchmarks ---------------------------------------------------------------------------------------

def check_mixed_loss(work: Path):
    def run() -> dict:
        _needs_cuda()
        cmd = [sys.executable, str(HERE / "mixed_loss.py"), "--tokens", "4096", "--hidden", "2560", "--dtype", "bf16",
               "--device", "cuda", "--rounds", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        (work / "mixed_loss.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise RuntimeError(f"mixed_loss.py exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
        return {"command": " ".join(cmd[1:]), "table": [line for line in proc.stdout.splitlines() if line.startswith("|")]}
    return run


def _throughput_rank(shape: dict, fp8: str | None, steps: int) -> dict:
    """Median seconds of a WD-JT step (2 micro-batches of one sequence) after one warm-up step."""
    import statistics

    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss import distributed
    from megatron_wmss.config import load_config
    from megatron_wmss.training.batches import GlobalBatchSchedule
    from megatron_wmss.training.components import build_components
    from megatron_wmss.training.train_module import train_module_for
    from step_time import RandomSFTData

    s = shape
    hf = dict(model_type="qwen3", vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["ffn"],
              num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"] // 2,
              head_dim=s["hidden"] // s["heads"], tie_word_embeddings=False, max_position_embeddings=s["seq"])
    overrides = ["training.objective=wmss", "training.global_batch_size=2", "training.micro_batch_size=1",
                 f"data.seq_length={s['seq']}", "training.tensorboard=false", "model.params_dtype=bf16"]
    if fp8:
        overrides += [f"model.fp8={fp8}", "model.transformer_impl=transformer_engine"]
    cfg = load_config(overrides=overrides)
    distributed.initialize()
    data = RandomSFTData(2, s["seq"], s["vocab"])
    schedule = GlobalBatchSchedule(data, global_batch_size=2, micro_batch_size=1, dp_size=1, dp_rank=0,
                                   train_iters=steps + 1)
    train_module = train_module_for(cfg)
    parts = build_components(cfg, train_module, hf, {}, schedule.total_steps)
    step_fn, forward_backward = train_module.forward_step, get_forward_backward_func()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for step in range(steps + 1):
        batches = schedule.micro_batches(step)
        sync()
        start = time.perf_counter()
        parts.model.zero_grad_buffer()
        parts.optimizer.zero_grad()
        forward_backward(forward_step_func=step_fn, data_iterator=iter(batches), model=parts.model,
                         num_microbatches=len(batches), seq_length=s["seq"], micro_batch_size=1, forward_only=False)
        parts.optimizer.step()
        sync()
        if step:
            times.append(time.perf_counter() - start)
    branch = parts.model.module.strong
    params = sum(p.numel() for p in branch.parameters())
    embedding = branch.embedding.word_embeddings.weight.numel() if hasattr(branch, "embedding") else 0
    distributed.destroy()
    return {"seconds_per_step": statistics.median(times), "tokens_per_step": 2 * s["seq"],
            "parameters_per_model": params, "embedding_parameters": embedding}


def check_throughput(shape: dict, fp8: str | None):
    def run() -> dict:
        import torch

        from megatron_wmss.testing import run_ranks

        if fp8:
            _needs_cuda()
            _needs("transformer_engine.pytorch")
            if torch.cuda.get_device_capability() < (8, 9):
                raise Skipped("FP8 needs compute capability >= 8.9")
        r = run_ranks(_throughput_rank, 1, shape, fp8, 3, timeout_s=600)[0]
        tokens_per_s = r["tokens_per_step"] / r["seconds_per_step"]
        # Training FLOPs per token of one model: 6 x matmul parameters (all but the input embedding)
        # + causal attention 6 x layers x seq x hidden; WD-JT trains two models.
        per_token = 6 * (r["parameters_per_model"] - r["embedding_parameters"]) + 6 * shape["layers"] * shape["seq"] * shape["hidden"]
        result = {"shape": shape, "fp8": fp8, **r, "tokens_per_s": tokens_per_s,
                  "model_flops_per_token": 2 * per_token}
        peak = _peak_tflops()
        if peak:
            result["mfu_vs_dense_bf16_peak"] = 2 * per_token * tokens_per_s / (peak[0] * 1e12)
            result["peak_tflops_bf16"] = peak[0]
        return result
    return run


def _peak_tflops() -> tuple[float, float] | None:
    if not _cuda():
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next(((bf16, fp8) for key, bf16, fp8 in PEAK_TFLOPS if key in name), None)


# ---- driver -------------------------------------------------------------------------------------------

def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), gpus=torch.cuda.device_count(), cuda=torch.version.cuda,
                   capability=list(torch.cuda.get_device_capability()))
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("megatron-core", "transformer_engine", "vllm", "transformers"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = None
    return env


def record(report: dict, name: str, check, out: Path) -> None:
    """Run one check; store pass/fail/skipped, seconds, and its result or error; rewrite the report."""
    start = time.monotonic()
    try:
        entry = {"status": "pass", "result": check()}
    except Skipped as why:
        entry = {"status": "skipped", "reason": str(why)}
    except BaseException as err:  # noqa: BLE001 - every failure is recorded, the next check still runs
        if isinstance(err, KeyboardInterrupt):
            raise
        entry = {"status": "fail", "error": f"{type(err).__name__}: {err}"[-4000:],
                 "traceback": traceback.format_exc()[-4000:]}
    entry["seconds"] = round(time.monotonic() - start, 2)
    report["checks"][name] = entry
    print(f"[gpu_acceptance] {name}: {entry['status']} ({entry['seconds']} s)"
          + (f" - {entry.get('reason') or entry.get('error', '').splitlines()[0]}" if entry["status"] != "pass" else ""),
          flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")


def checks(work: Path, report: dict, smoke: bool) -> list[tuple[str, object]]:
    return [
        ("te_layer_spec_bf16", check_te_layer_spec(None)),
        ("te_layer_spec_fp8", check_te_layer_spec("hybrid")),
        ("tiny_setup", check_tiny_setup(work)),
        ("wmss_run_tp1", check_wmss_run(work, report, 1)),
        ("wdjt_tp1", check_from_run_dir(work, report, "wdjt")),
        ("wdds_scoring", check_from_run_dir(work, report, "scoring")),
        ("hf_export", check_from_run_dir(work, report, "export")),
        ("wdjt_tp2", check_wmss_run(work, report, 2)),
        ("vllm_gsm8k", check_eval(work, report)),
        ("mixed_loss_bf16", check_mixed_loss(work)),
        ("wdjt_1b_bf16", check_throughput(TINY if smoke else ONE_B, None)),
        ("wdjt_1b_fp8", check_throughput(ONE_B, "hybrid")),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu_acceptance", help="work directory; the report is <out>/report.json")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="no GPU: run the tiny-model checks on CPU (throughput at a tiny shape), skip the rest")
    parser.add_argument("--only", nargs="*", help="run only these checks (names as in the report)")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not _cuda():
        raise SystemExit("gpu_acceptance: no CUDA device; use --cpu-smoke for the CPU parts")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "environment": environment(), "checks": {}}
    start = time.monotonic()
    for name, check in checks(out / "work", report, args.cpu_smoke):
        if args.only is None or name in args.only:
            (out / "work").mkdir(exist_ok=True)
            record(report, name, check, out)
    report["total_seconds"] = round(time.monotonic() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    failed = [n for n, c in report["checks"].items() if c["status"] == "fail"]
    print(f"[gpu_acceptance] {len(report['checks']) - len(failed)} of {len(report['checks'])} checks did not fail "
          f"({report['total_seconds']} s); report: {out / 'report.json'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
