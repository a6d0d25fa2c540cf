"""Generation backends behind one interface: HF transformers (CPU or one GPU, batched; small models and
tests) and vLLM (GPU, tensor parallel; imported lazily, `pip install megatron_wmss[gpu]`).

Both take prompt token ids rendered by `eval.prompts.render`, so the two backends see identical
prompts, and both stop at the same end-of-turn tokens (`eval.prompts.stop_token_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from megatron_wmss.eval.prompts import stop_token_ids

BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class SamplingConfig:
    """Greedy when temperature == 0 (then n must be 1). Paper pass@k: n=64, T=0.7, top_p=0.95."""

    max_new_tokens: int
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.n < 1:
            raise ValueError("n (samples per problem) must be >= 1")
        if self.greedy and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) with n > 1 gives n identical samples; "
                             "set a temperature (paper: --temperature 0.7 --top-p 0.95) or n = 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Generation:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) or "length" (hit max_new_tokens)


class Backend(Protocol):
    name: str
    tokenizer: object

    def generate(self, prompts: Sequence[list[int]], cfg: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Generation]]:
        """cfg.n generations for every prompt; `seeds[i]` seeds prompt i when sampling."""


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def _model_eos(model_dir: str | Path):
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except (OSError, ValueError):
        return None


def check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {path}: not a HF model directory (no config.json); "
                                "export a trained checkpoint with the conversion tool first")
    return path


class TransformersBackend:
    """`AutoModelForCausalLM.generate`, left-padded batches of `batch_size` prompts.

    Sampling is seeded once per batch (with the seed of its first prompt): reproducible for the same
    batch size, not per prompt as with vLLM."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str = "auto", batch_size: int = 8,
                 stop_tokens: Sequence[str] = ()):
        import torch
        from transformers import AutoModelForCausalLM

        model_dir = check_model_dir(model_dir)
        self.torch = torch
        self.device = device
        self.batch_size = max(1, batch_size)
        self.tokenizer = load_tokenizer(model_dir)
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "auto"
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype).to(device).eval()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id, stop_tokens)
        if not self.stop_ids:
            raise ValueError(f"{model_dir}: tokenizer has no EOS/end-of-turn token to stop generation at")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]

    def _generation_config(self, cfg: SamplingConfig):
        from transformers import GenerationConfig

        # every field set explicitly so the model's own generation_config.json (e.g. top_k=20,
        # repetition_penalty) cannot leak in; vLLM ignores it too when given SamplingParams
        common = dict(max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.n, eos_token_id=self.stop_ids,
                      pad_token_id=self.pad_id, repetition_penalty=1.0, no_repeat_ngram_size=0)
        if cfg.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, **common)

    def generate(self, prompts, cfg, seeds):
        torch = self.torch
        gen_cfg = self._generation_config(cfg)
        results: list[list[Generation]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, p in enumerate(batch):  # left padding
                ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p):] = 1
            if not cfg.greedy:
                torch.manual_seed(int(seeds[start]))
            with torch.no_grad():
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          generation_config=gen_cfg)
            new_tokens = out[:, width:].tolist()
            for i in range(len(batch)):
                results.append([self._finish(t) for t in new_tokens[i * cfg.n:(i + 1) * cfg.n]])
        return results

    def _finish(self, tokens: list[int]) -> Generation:
        stop = next((j for j, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        return Generation(self.tokenizer.decode(kept, skip_special_tokens=True), len(kept) + (stop is not None),
                          "length" if stop is None else "stop")


def vllm_sampling_kwargs(cfg: SamplingConfig, seed: int | None, stop_ids: Sequence[int]) -> dict:
    """Keyword arguments for `vllm.SamplingParams` (kept separate so it is testable without vLLM)."""
    kwargs = dict(n=cfg.n, max_tokens=cfg.max_new_tokens, stop_token_ids=list(stop_ids), skip_special_tokens=True)
    if cfg.greedy:
        kwargs.update(temperature=0.0, top_p=1.0)
    else:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    return kwargs


class VLLMBackend:
    """vLLM offline engine on GPU(s): greedy (T=0) or sampled (n, T, top-p, per-prompt seed)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, tensor_parallel_size: int = 1, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, seed: int = 0,
                 enforce_eager: bool = False, stop_tokens: Sequence[str] = ()):
        from megatron_wmss.compat.optional import require

        vllm = require("vllm")  # clear message: pip install megatron_wmss[gpu] or --backend transformers
        model_dir = check_model_dir(model_dir)
        self.vllm = vllm
        self.tokenizer = load_tokenizer(model_dir)
        self.stop_ids = stop_token_ids(self.tokenizer, _model_eos(model_dir), stop_tokens)
        self.llm = vllm.LLM(model=str(model_dir), tokenizer=str(model_dir), tensor_parallel_size=tensor_parallel_size,
                            dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            seed=seed, enforce_eager=enforce_eager)

    def generate(self, prompts, cfg, seeds):
        params = [self.vllm.SamplingParams(**vllm_sampling_kwargs(cfg, int(s), self.stop_ids)) for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        return [[Generation(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                 for o in out.outputs] for out in outputs]


def make_backend(name: str, model_dir: str | Path, **options) -> Backend:
    """Build a backend by name; `options` are that backend's constructor keywords."""
    if name == "transformers":
        keys = ("device", "dtype", "batch_size", "stop_tokens")
        return TransformersBackend(model_dir, **{k: v for k, v in options.items() if k in keys and v is not None})
    if name == "vllm":
        keys = ("tensor_parallel_size", "dtype", "gpu_memory_utilization", "max_model_len", "seed", "enforce_eager",
                "stop_tokens")
        return VLLMBackend(model_dir, **{k: v for k, v in options.items() if k in keys and v is not None})
    raise ValueError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
