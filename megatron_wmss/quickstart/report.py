"""The quickstart's results: a table (SFT vs WMSS accuracy, WD-DS selected fraction, wall time per
phase), a PNG (loss curves of both runs, WD-DS entropy histogram) and a markdown report."""

from __future__ import annotations

import json
from pathlib import Path

ARCH_LABELS = {"qwen3": "Qwen3", "gemma3": "Gemma-3 (text)"}  # quickstart --arch -> report wording


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _accuracy(eval_dir: Path, bench: str) -> dict | None:
    path = eval_dir / "summary.json"
    if not path.is_file():
        return None
    b = json.loads(path.read_text())["benchmarks"].get(bench)
    if b is None:
        return None
    return {"accuracy": b["pass@1"] / 100.0, "problems": b["problems"], "reasons": b["reasons"],
            "truncated": b["truncated"]}


def collect(out: Path, run_dir: Path, bench: str, timings: dict, meta: dict) -> dict:
    """Everything the report shows, as one JSON-able dict (also written to results.json)."""
    select = run_dir / "iter_1" / "select" / "summary.json"
    return {
        **meta,
        "accuracy": {"sft": _accuracy(run_dir / "eval" / "baseline_sft", bench),
                     "wmss": _accuracy(run_dir / "eval" / "wmss", bench),
                     "m0": _accuracy(run_dir / "eval" / "m0", bench),
                     "m1": _accuracy(run_dir / "eval" / "phase1_sft", bench)},
        "selection": json.loads(select.read_text()) if select.is_file() else None,
        "timings": timings,
        "curves": {
            "phase1_sft": read_jsonl(run_dir / "phase1_sft" / "metrics.jsonl"),
            "wdjt": read_jsonl(run_dir / "iter_1" / "wdjt" / "metrics.jsonl"),
            "baseline_sft": read_jsonl(run_dir / "baseline_sft" / "metrics.jsonl"),
        },
    }


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _pct(acc: dict | None) -> str:
    if acc is None:
        return "-"
    return f"{100 * acc['accuracy']:.1f}% ({round(acc['accuracy'] * acc['problems'])}/{acc['problems']})"


def results_table(res: dict) -> str:
    """The console/markdown results table."""
    acc, sel, steps = res["accuracy"], res["selection"], res["steps"]
    lines = ["| model | training | held-out accuracy (greedy, math-verify) |", "|---|---|---|",
             f"| M0 (base) | pre-training only | {_pct(acc.get('m0'))} |",
             f"| M1 (WMSS Phase 1) | {steps['phase1_sft']} SFT steps on D | {_pct(acc.get('m1'))} |",
             f"| **SFT baseline** | {steps['baseline_sft']} SFT steps on D | {_pct(acc['sft'])} |",
             f"| **WMSS (K=1)** = M1 + WD-JT | {steps['phase1_sft']} SFT steps on D + {sum(steps['wdjt'])} WD-JT "
             f"steps on D_active | {_pct(acc['wmss'])} |"]
    if acc["sft"] and acc["wmss"]:
        diff = 100 * (acc["wmss"]["accuracy"] - acc["sft"]["accuracy"])
        lines.append(f"| WMSS - SFT | | {diff:+.1f} points |")
    lines.append("")
    if sel:
        lines += [f"WD-DS: selected fraction {sel['selected_fraction']:.3f} ({sel['active_set_size']} of "
                  f"{sel['num_samples']} samples after de-duplication); mean entropy strong "
                  f"{sel['entropy_strong']['mean']:.3f} vs weak {sel['entropy_weak']['mean']:.3f} nats/token; "
                  f"p_i*N in [{sel['weight_min']:.2f}, {sel['weight_max']:.2f}], coefficient of variation "
                  f"{sel['weight_cv']:.3f}", ""]
    wall = res.get("wall") or {}
    side = wall.get("runs_concurrent")
    lines += ["| step | wall time |", "|---|---|"]
    for name, t in res["timings"].items():
        notes = []
        if side and (name.startswith(("M0 conversion", "Phase 1", "WD-", "WMSS export", "baseline"))):
            notes.append("WMSS and baseline runs side by side")
        if t.get("resumed"):
            notes.append("earlier invocation")
        lines.append(f"| {name} | {_fmt_s(t.get('seconds'))}{' (' + '; '.join(notes) + ')' if notes else ''} |")
    calls = wall.get("invocations") or []
    if calls:
        more = f" over {len(calls)} invocations ({', '.join(_fmt_s(c) for c in calls)})" if len(calls) > 1 else ""
        lines.append(f"| **whole quickstart, wall clock{more}** | **{_fmt_s(sum(calls))}** |")
    return "\n".join(lines) + "\n"


def _steps(records: list[dict], offset: int = 0) -> list[int]:
    return [offset + r["step"] for r in records]


def plot(res: dict, path: Path) -> None:
    """Left: training loss vs optimizer steps (baseline SFT; WMSS Phase 1 then WD-JT, strong-branch CE
    and the mixed loss). Right: WD-DS entropies of weak M0 and strong M1 per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res["curves"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    if c["baseline_sft"]:
        left.plot(_steps(c["baseline_sft"]), [r["loss"] for r in c["baseline_sft"]],
                  label="SFT baseline", color="tab:blue")
    if c["phase1_sft"]:
        left.plot(_steps(c["phase1_sft"]), [r["loss"] for r in c["phase1_sft"]],
                  label="WMSS Phase 1: SFT (M0 -> M1)", color="tab:orange")
    if c["wdjt"]:
        x = _steps(c["wdjt"], offset=res["steps"]["phase1_sft"])
        left.plot(x, [r.get("strong_ce", r["loss"]) for r in c["wdjt"]], color="tab:red",
                  label="WMSS WD-JT: strong-branch CE (M2)")
        left.plot(x, [r["loss"] for r in c["wdjt"]], color="tab:red", linestyle="--", alpha=0.6,
                  label="WMSS WD-JT: mixed-logit loss (Eq. 6)")
        if "weak_ce" in c["wdjt"][0]:
            left.plot(x, [r["weak_ce"] for r in c["wdjt"]], color="tab:gray", linestyle=":",
                      label="WMSS WD-JT: weak-branch CE")
    left.set_xlabel("optimizer steps (WMSS: Phase 1, then WD-JT)")
    left.set_ylabel("cross-entropy per supervised token")
    left.set_yscale("log")
    left.set_title("training loss")
    left.legend(fontsize=8)
    scores = res.get("scores") or {}
    if scores:
        import numpy as np

        hs, hw = np.array(scores["h_strong"]), np.array(scores["h_weak"])
        lo, hi = min(hs.min(), hw.min()), max(hs.max(), hw.max())
        bins = np.linspace(lo - 0.02 * (hi - lo) - 1e-6, hi + 0.02 * (hi - lo) + 1e-6, 40)
        right.hist(hw, bins=bins, alpha=0.6, label="weak M0")
        right.hist(hs, bins=bins, alpha=0.6, label="strong M1")
        right.set_xlabel("token-averaged predictive entropy over the completion (Eq. 7), nats")
        right.set_ylabel("samples")
        frac = (res["selection"] or {}).get("selected_fraction")
        right.set_title("WD-DS entropies" + (f" (selected fraction {frac:.2f})" if frac is not None else ""))
        right.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def markdown_report(res: dict, table: str, png_name: str) -> str:
    acc = res["accuracy"]
    if acc["sft"] and acc["wmss"]:
        d = 100 * (acc["wmss"]["accuracy"] - acc["sft"]["accuracy"])
        verdict = (f"WMSS {'beat' if d > 0 else 'did not beat'} the step-matched SFT baseline on this run "
                   f"({d:+.1f} points on {acc['sft']['problems']} held-out problems, seed {res['seed']}).")
        if abs(d) < 5:
            verdict += " A difference this small is within the run-to-run noise of a toy model and test set."
        if acc.get("m1"):
            verdict += (f" WD-JT took the Phase-1 model M1 from {100 * acc['m1']['accuracy']:.1f}% to "
                        f"{100 * acc['wmss']['accuracy']:.1f}%; the SFT baseline "
                        f"({res['steps']['baseline_sft']} steps) reached "
                        f"{100 * acc['sft']['accuracy']:.1f}%.")
    else:
        verdict = "Evaluation incomplete."
    cmd = " ".join(res["command"])
    lines = [
        "# WMSS quickstart report", "",
        f"Command: `{cmd}`  ", f"Seed: {res['seed']}, tensor parallel size {res['tp']}, run directory `{res['out']}`",
        "", verdict, "", table,
        f"![loss curves and WD-DS entropies]({png_name})", "",
        "## What ran", "",
        f"* Task: {res['num_train']} training / {res['num_test']} held-out multi-step arithmetic word problems "
        "(AM-schema chat rows, `task/`), answers graded with math-verify (`wmss eval --benchmark-file`).",
        f"* Tokenizer: byte-level BPE trained on the task text, {res['vocab_size']} tokens, ChatML template "
        "(`tokenizer/`).",
        f"* M0: {ARCH_LABELS[res['settings'].get('arch', 'qwen3')]} architecture, "
        f"{res['m0']['parameters'] / 1e6:.2f}M parameters, pre-trained "
        f"{res['m0']['steps']} steps on plain task text without the chat format (`base_model/`).",
        "* Then the production path: `wmss preprocess` -> `wmss run` (HF -> megatron conversion, Phase 1 SFT, "
        "WD-DS, WD-JT, export to HF) and `wmss run --baseline sft` -> `wmss eval` on both exported models.",
        "", "## Commands", "", "```"] + res["commands"] + ["```", ""]
    return "\n".join(lines)
