"""Run configuration: dataclasses with the paper's defaults, YAML recipes, dotted overrides, validation.

Defaults follow the paper (App. E.5, B.6): AdamW, lr 1e-5, 10% warm-up, global batch 512, clip 1.0,
max length 4096, alpha/beta/gamma = 0.1/0.8/0.1, lambda = 0.5, K = 1. The LR decay after warm-up is
linear to 0, the HF Trainer default that the paper's TRL runs used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

import yaml

from megatron_wmss.errors import ConfigError
from megatron_wmss.eval.config import EvalConfig
from megatron_wmss.pipeline import PipelineConfig
from megatron_wmss.selection.config import SelectionConfig
from megatron_wmss.training.neftune import NEFTuneConfig
from megatron_wmss.training.train_module import OBJECTIVES
from megatron_wmss.training.undial import UNDIALConfig
from megatron_wmss.training.preference import PreferenceConfig
from megatron_wmss.training.wdjt import WDJTConfig
from megatron_wmss.w2s.config import W2SConfig


@dataclass
class ModelConfig:
    hf_path: str = ""  # HF model directory (config.json, weights, tokenizer) the run starts from (M0)
    params_dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU; or fp32 / bf16 (fp16 is refused: no loss scaler)
    transformer_impl: str = "auto"  # auto = transformer_engine when importable on CUDA, else local
    make_vocab_size_divisible_by: int = 128  # padded vocab is a multiple of this times TP
    fp8: Optional[str] = None  # None, "hybrid" or "e4m3" (Transformer Engine only)
    fp8_recipe: str = "delayed"  # delayed / tensorwise / mxfp8 / blockwise
    fp8_margin: int = 0
    fp8_amax_history_len: int = 1024
    fp8_amax_compute_algo: str = "max"
    recompute_granularity: Optional[str] = None  # None, "full" or "selective"


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    cp: int = 1  # only 1: context parallelism is refused until the data is split per CP rank
    vpp: Optional[int] = None  # only null: the model is built as one chunk per pipeline stage
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False


@dataclass
class DataConfig:
    path: str = ""  # prefix of the indexed dataset written by `wmss preprocess`
    seq_length: int = 4096
    pack: bool = False  # first-fit-decreasing rows, attention kept per sample (docs/data.md "Packing")
    seed: int = 1234
    pad_to: str = "seq_length"  # or "longest": each micro-batch cut after its longest row's content (pp = 1)


@dataclass
class TrainingConfig:
    objective: str = "sft"  # "sft", "wmss" (WD-JT), the baselines "neftune" / "undial", "dpo" or "orpo" (pair data)
    epochs: float = 1.0
    train_iters: Optional[int] = None  # overrides epochs when set
    global_batch_size: int = 512
    micro_batch_size: int = 1
    lr: float = 1e-5
    min_lr: float = 0.0
    warmup_fraction: float = 0.1
    lr_decay: str = "linear"  # linear / cosine / constant after warm-up
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    seed: int = 1234
    log_interval: int = 1
    save_interval: int = 0  # 0 = only at the end
    keep_last: int = 2  # step checkpoints kept (older ones deleted after each complete save); 0 = keep all
    tensorboard: bool = True
    # which phase of a multi-phase run this is (set by `wmss run` / `wmss study`): each phase draws its
    # own per-epoch shuffles from (data.seed, phase, epoch), so no phase replays another one's order
    data_phase: int = 0
    export_steps: list = field(default_factory=list)  # also export the model(s) after these steps


@dataclass
class WmssConfig(PipelineConfig, SelectionConfig, WDJTConfig):
    """Section `wmss`: the settings of WD-JT (training/wdjt.py: lam, freeze_weak), WD-DS
    (selection/config.py: alpha, beta, gamma, selection_formula, dedupe, num_draws) and Algorithm 1's
    schedule (pipeline.py: iterations, budgets, weak); each part validates itself."""

    def validate(self) -> None:
        for part in (WDJTConfig, SelectionConfig, PipelineConfig):
            part.validate(self)


@dataclass
class StudyConfig:
    """`wmss study`: arms trained from one Phase-1 model M1 with equal steps and LR schedule (docs/study.md)."""

    arms: list = field(default_factory=lambda: ["sft", "sft_active", "random", "wdjt", "wdjt_frozen"])
    seeds: list = field(default_factory=lambda: [1, 2, 3])
    lams: list = field(default_factory=list)  # extra WD-JT arms wdjt_lam<λ>
    stage_steps: Optional[int] = None  # steps of every arm; null = 1 epoch of the first seed's D_active
    stage_lr: Optional[float] = None  # peak learning rate of every arm; null = training.lr
    benchmark_file: Optional[str] = None  # NAME=PATH for `wmss eval --benchmark-file`; null = eval.benchmarks
    curve_steps: list = field(default_factory=list)  # Phase-1 steps also evaluated (the plateau curve)
    heldout_data: Optional[str] = None  # preprocessed held-out prefix: held-out loss of every evaluated model
    diagnose: bool = True  # `wmss diagnose` of every arm and seed (the logit statistics of study.md)


@dataclass
class Config:
    run_dir: str = "runs/wmss"
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    wmss: WmssConfig = field(default_factory=WmssConfig)
    neftune: NEFTuneConfig = field(default_factory=NEFTuneConfig)  # training.objective=neftune
    undial: UNDIALConfig = field(default_factory=UNDIALConfig)  # training.objective=undial
    eval: EvalConfig = field(default_factory=EvalConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    w2s: W2SConfig = field(default_factory=W2SConfig)


def _coerce(value: Any, annotation: Any, option: str) -> Any:
    """Check/convert one YAML value to the field's declared type."""
    if get_origin(annotation) is Optional or (get_origin(annotation) is not None and type(None) in get_args(annotation)):
        if value is None:
            return None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{option}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{option}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{option}: expected a number, got {value!r}")
        if not math.isfinite(number):  # YAML reads .inf / .nan as floats
            raise ConfigError(f"{option}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{option}: expected a string, got {value!r}")
    if annotation is list or get_origin(annotation) is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ConfigError(f"{option}: expected a list, got {value!r}")
    return value


def _apply(obj: Any, values: dict, prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        option = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown option '{option}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{option}: expected a mapping of options, got {value!r}")
            _apply(current, value, prefix=f"{option}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], option))


def parse_override(text: str) -> tuple[list[str], Any]:
    """'training.lr=2e-5' -> (['training', 'lr'], 2e-05); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.option=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    return key.strip().split("."), value


def load_config(recipe: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Build a Config from defaults <- YAML recipe <- dotted overrides, then validate it."""
    cfg = Config()
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        _apply(cfg, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _apply(cfg, nested)
    validate(cfg)
    return cfg


def _check(condition: bool, option: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{option}: {message}")


def validate(cfg: Config) -> None:
    """One pass over every option before any compute; raises ConfigError naming the option."""
    m, p, d, t, w, e = cfg.model, cfg.parallel, cfg.data, cfg.training, cfg.wmss, cfg.eval
    _check(m.params_dtype in ("auto", "fp32", "bf16", "fp16"), "model.params_dtype", "one of auto/fp32/bf16")
    _check(m.params_dtype != "fp16", "model.params_dtype", "fp16 is not supported (no loss scaler is wired, "
           "so small gradients would underflow); use bf16")
    _check(m.transformer_impl in ("auto", "local", "transformer_engine"), "model.transformer_impl",
           "one of auto/local/transformer_engine")
    _check(m.fp8 in (None, "hybrid", "e4m3"), "model.fp8", "one of null/hybrid/e4m3")
    _check(m.fp8 is None or m.transformer_impl != "local", "model.fp8", "FP8 needs transformer_impl "
           "transformer_engine (or auto on a GPU with Transformer Engine)")
    _check(m.fp8_recipe in ("delayed", "tensorwise", "mxfp8", "blockwise"), "model.fp8_recipe",
           "one of delayed/tensorwise/mxfp8/blockwise")
    _check(m.make_vocab_size_divisible_by >= 1, "model.make_vocab_size_divisible_by", "must be >= 1")
    _check(m.recompute_granularity in (None, "full", "selective"), "model.recompute_granularity",
           "one of null/full/selective")
    for name in ("tp", "pp", "cp"):
        _check(getattr(p, name) >= 1, f"parallel.{name}", "must be >= 1")
    _check(p.cp == 1, "parallel.cp", "context parallelism is not implemented yet (the data is not split per "
           "CP rank); use 1")
    _check(p.vpp is None, "parallel.vpp", "virtual pipeline stages are not implemented yet (the model is built "
           "as one chunk per stage); use null")
    _check(d.seq_length >= 2, "data.seq_length", "must be >= 2")
    _check(not p.sequence_parallel or d.seq_length % p.tp == 0, "parallel.sequence_parallel",
           f"the sequence is split over the {p.tp} tensor-parallel ranks: data.seq_length ({d.seq_length}) "
           f"must be divisible by parallel.tp")
    _check(d.pad_to in ("seq_length", "longest"), "data.pad_to", "one of seq_length/longest")
    _check(d.pad_to == "seq_length" or p.pp == 1, "data.pad_to", "longest needs parallel.pp=1 (the pipeline "
           "schedule sends [seq_length, b, h] tensors between stages); use data.pad_to=seq_length")
    _check(t.objective in OBJECTIVES, "training.objective", "one of " + "/".join(OBJECTIVES))
    _check(t.epochs > 0, "training.epochs", "must be > 0")
    _check(t.train_iters is None or t.train_iters > 0, "training.train_iters", "must be > 0")
    _check(t.micro_batch_size >= 1, "training.micro_batch_size", "must be >= 1")
    _check(t.global_batch_size >= t.micro_batch_size, "training.global_batch_size",
           f"must be >= training.micro_batch_size ({t.micro_batch_size})")
    _check(t.lr > 0, "training.lr", "must be > 0")
    _check(0 <= t.min_lr <= t.lr, "training.min_lr", "must be in [0, training.lr]")
    _check(0 <= t.warmup_fraction < 1, "training.warmup_fraction", "must be in [0, 1)")
    _check(t.lr_decay in ("linear", "cosine", "constant"), "training.lr_decay", "one of linear/cosine/constant")
    _check(t.clip_grad >= 0, "training.clip_grad", "must be >= 0 (0 disables clipping)")
    _check(t.log_interval >= 1, "training.log_interval", "must be >= 1")
    _check(t.save_interval >= 0, "training.save_interval", "must be >= 0")
    _check(t.keep_last >= 0, "training.keep_last", "must be >= 0 (0 keeps every checkpoint)")
    w.validate()
    cfg.neftune.validate()
    cfg.undial.validate()
    cfg.preference.validate()
    cfg.w2s.validate()
    _check(t.data_phase >= 0, "training.data_phase", "must be >= 0")
    _check(all(isinstance(k, int) and k >= 1 for k in t.export_steps), "training.export_steps",
           "each entry must be a step number >= 1")
    _validate_study(cfg.study)
    e.validate()


STUDY_ARMS = ("sft", "sft_active", "random", "wdjt", "wdjt_frozen", "neftune", "undial")


def _validate_study(s: StudyConfig) -> None:
    unknown = [a for a in s.arms if a not in STUDY_ARMS]
    _check(not unknown, "study.arms", f"unknown arm(s) {unknown}; known: {', '.join(STUDY_ARMS)}")
    _check(len(set(s.arms)) == len(s.arms), "study.arms", "an arm is listed twice")
    _check(bool(s.seeds) and all(isinstance(x, int) for x in s.seeds), "study.seeds", "a non-empty list of integers")
    _check(len(set(s.seeds)) == len(s.seeds), "study.seeds", "a seed is listed twice")
    _check(all(isinstance(x, (int, float)) and 0.0 <= x <= 1.0 for x in s.lams), "study.lams",
           "each lambda must be a number in [0, 1]")
    _check(s.stage_steps is None or s.stage_steps >= 1, "study.stage_steps", "must be >= 1 (or null)")
    _check(s.stage_lr is None or s.stage_lr > 0, "study.stage_lr", "must be > 0 (or null)")
    _check(s.benchmark_file is None or "=" in s.benchmark_file, "study.benchmark_file", "expected NAME=PATH")
    _check(all(isinstance(k, int) and k >= 1 for k in s.curve_steps), "study.curve_steps",
           "each entry must be a step number >= 1")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (for YAML dumps into run directories)."""
    return dataclasses.asdict(cfg)
