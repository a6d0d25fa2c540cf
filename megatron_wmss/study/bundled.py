"""The bundled study task: the quickstart's generator at the "plateau" difficulty, its tokenizer and a
tiny pre-trained M0, made on this machine (no downloads), then preprocessed like any dataset.

`wmss study` without `--config` uses it: the default setup is sized so that Phase-1 SFT saturates the
easy half of the problems and leaves the hard half under-learned (docs/study.md shows the curve); `--quick` is the same study, reduced to
finish in minutes (a smoke test of the instrument, too small to conclude anything).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_NAME = "arith"
TASK_SEED = 1234  # the task, tokenizer, M0 and Phase 1 are made once; the study's seeds vary what follows


@dataclass(frozen=True)
class BundledSetup:
    recipe: str  # path relative to the repository root
    num_train: int
    num_test: int
    pretrain_docs: int
    pretrain_steps: int
    hidden_size: int
    layers: int
    ffn_size: int
    vocab_size: int = 1024
    preset: str = "plateau"


DEFAULT = BundledSetup(recipe="examples/study/plateau.yaml", num_train=1000, num_test=1000, pretrain_docs=16000,
                       pretrain_steps=150, hidden_size=128, layers=4, ffn_size=384)
QUICK = replace(DEFAULT, recipe="examples/study/plateau_quick.yaml", num_train=400, num_test=100,
                pretrain_docs=2000, pretrain_steps=40, hidden_size=64, layers=2, ffn_size=192, vocab_size=512)


def prepare(out: Path, setup: BundledSetup, say=print) -> list[str]:
    """Write task/, tokenizer/, base_model/ (M0), data/train and data/test into `out` (each skipped when
    present); return the recipe overrides that point a study at them."""
    from megatron_wmss.quickstart import steps as quickstart
    from megatron_wmss.quickstart.base_model import BaseModelConfig
    from megatron_wmss.quickstart.task import TASK_PRESETS

    settings = asdict(setup)
    state = out / "bundled.json"
    if state.is_file() and json.loads(state.read_text()) != settings:
        raise SystemExit(f"wmss study: {out} holds a study with another bundled setup (--quick or not); "
                         "use another --out")
    out.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(settings, indent=1) + "\n")
    task = replace(TASK_PRESETS[setup.preset], num_train=setup.num_train, num_test=setup.num_test, seed=TASK_SEED)
    model = BaseModelConfig(hidden_size=setup.hidden_size, num_layers=setup.layers,
                            intermediate_size=setup.ffn_size, steps=setup.pretrain_steps, seed=TASK_SEED)
    quickstart.step_task(out, task, setup.pretrain_docs)
    quickstart.step_tokenizer(out, setup.vocab_size)
    quickstart.step_base_model(out, model)
    max_len = _recipe_seq_length(setup)
    quickstart.step_preprocess(out, max_len)
    _preprocess_heldout(out, max_len, say)
    return [f"model.hf_path={out / 'base_model'}", f"data.path={out / 'data' / 'train'}",
            f"study.heldout_data={out / 'data' / 'test'}",
            f"study.benchmark_file={BENCH_NAME}={out / 'task' / 'test_benchmark.jsonl'}"]


def recipe_path(setup: BundledSetup) -> Path:
    path = REPO_ROOT / setup.recipe
    if not path.is_file():
        raise SystemExit(f"wmss study: bundled recipe {path} not found (run from a clone of the repository, "
                         "or pass --config)")
    return path


def _recipe_seq_length(setup: BundledSetup) -> int:
    from megatron_wmss.config import load_config

    return load_config(recipe_path(setup)).data.seq_length


def _preprocess_heldout(out: Path, max_len: int, say) -> None:
    """The held-out problems as preprocessed data too: the held-out loss of every evaluated model."""
    from megatron_wmss.quickstart.steps import run_wmss
    from megatron_wmss.quickstart.task import SYSTEM_PROMPT

    if (out / "data" / "test.manifest.json").is_file():
        return
    argv = ["--input", str(out / "task" / "test.jsonl"), "--tokenizer", str(out / "base_model"),
            "--output-prefix", str(out / "data" / "test"), "--require-format", "--verify-answers",
            "--max-seq-length", str(max_len), "--system-prompt", SYSTEM_PROMPT]
    say("held-out set: wmss preprocess " + " ".join(argv))
    if run_wmss(["preprocess", *argv]) != 0:
        raise SystemExit("wmss study: preprocessing the held-out problems failed (see above)")
