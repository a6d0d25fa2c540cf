"""megatron-core on a CPU-only torch build (gloo): the CUDA assumptions we patch, one function each.

`apply()` is a no-op when CUDA is available, so nothing here is ever active on a GPU machine. It must
run after `import torch` and before megatron's RNG seeding or model construction; `distributed.initialize`
calls it. Every patch names the megatron-core call site it covers (measured on 0.16.1 and 0.19.2, see
docs/cpu.md and the probes in ../shared/probes/megatron-core-cpu/).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import math
import types

import torch

_APPLIED: list[str] = []

# megatron modules that call torch factories with device="cuda" / torch.cuda.current_device():
# schedules (total_num_tokens), optimizer + clip_grads (norm buffers), distrib_optimizer and
# param_and_grad_buffer (grad/param buffers), DDP, finalize_model_grads, utils.
_MODULES_WITH_CUDA_FACTORIES = (
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.optimizer.distrib_optimizer",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.distributed.distributed_data_parallel",
    "megatron.core.distributed.finalize_model_grads",
    "megatron.core.utils",
)
_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "randn", "rand", "randint",
              "as_tensor", "zeros_like", "ones_like", "empty_like", "full_like")


def _is_cuda_device(device) -> bool:
    if device is None or isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True
    return str(device).startswith("cuda")


def _cpu_rng_tracker():
    """tensor_parallel.random.model_parallel_cuda_manual_seed -> CudaRNGStatesTracker.add/fork call
    torch.cuda.get_rng_state; keep the same API on torch CPU generator states instead."""
    from megatron.core.tensor_parallel import random as mp_random

    class CPURNGStatesTracker(mp_random.CudaRNGStatesTracker):
        def add(self, name, seed):
            self._is_initialized = True
            if seed in self.seeds_:
                raise RuntimeError(f"seed {seed} already exists")
            if name in self.states_:
                raise RuntimeError(f"rng state {name} already exists")
            self.seeds_.add(seed)
            outer = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)

        @contextlib.contextmanager
        def fork(self, name=mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise RuntimeError(f"rng state {name} is not added")
            outer = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(outer)

    mp_random._CUDA_RNG_STATE_TRACKER = CPURNGStatesTracker()
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True  # initialize_rng_tracker() keeps ours


def _global_memory_buffer_on_cpu():
    """utils.GlobalMemoryBuffer.get_tensor (DotProductAttention's workspace) allocates on cuda."""
    from megatron.core import utils as mcore_utils

    def get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):
        numel = math.prod(tensor_shape)
        buf = self.buffer.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = self.buffer[(name, dtype)] = torch.empty(numel, dtype=dtype, requires_grad=False)
        return buf[:numel].view(*tensor_shape)

    mcore_utils.GlobalMemoryBuffer.get_tensor = get_tensor


def _causal_mask_on_cpu():
    """transformer.utils.get_default_causal_mask (attention_mask=None) builds the mask on cuda."""
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils as transformer_utils

    @functools.lru_cache(maxsize=8)
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq), diagonal=1).bool()

    transformer_utils.get_default_causal_mask = get_default_causal_mask
    fused_softmax.get_default_causal_mask = get_default_causal_mask


def _sliding_window_mask_on_cpu():
    """transformer.utils.get_sliding_window_causal_mask (window attention on the local path, used by
    Gemma-3) builds the mask on cuda; same mask on cpu."""
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils as transformer_utils

    @functools.lru_cache(maxsize=8)
    def get_sliding_window_causal_mask(sq: int, skv: int, window_size: tuple) -> torch.Tensor:
        ones = torch.ones(sq, skv, dtype=torch.bool)
        allowed = torch.tril(torch.triu(ones, diagonal=skv - sq - window_size[0]), diagonal=skv - sq + window_size[1])
        return ~allowed

    transformer_utils.get_sliding_window_causal_mask = get_sliding_window_causal_mask
    fused_softmax.get_sliding_window_causal_mask = get_sliding_window_causal_mask


def _cuda_device_queries():
    """torch.cuda.current_device (~170 `device=torch.cuda.current_device()` sites: TP gathers, layers,
    DDP buffers), synchronize (timers, p2p), current_stream/default_stream (DDP start_grad_sync)."""

    class _NoStream:
        def wait_event(self, *a, **k): ...
        def wait_stream(self, *a, **k): ...
        def synchronize(self): ...
        def record_event(self, *a, **k): return None

    stream = _NoStream()
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.current_stream = lambda *a, **k: stream
    torch.cuda.default_stream = lambda *a, **k: stream


def _module_torch_factories():
    """Give the modules in _MODULES_WITH_CUDA_FACTORIES a `torch` whose factories map a cuda device
    to cpu (e.g. schedules' `torch.zeros([], device="cuda")` for total_num_tokens)."""

    class _TorchProxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    proxy = _TorchProxy("torch")
    for name in _FACTORIES:
        factory = getattr(torch, name)

        def on_cpu(*args, _factory=factory, **kwargs):
            if _is_cuda_device(kwargs.get("device")):
                kwargs["device"] = "cpu"
            return _factory(*args, **kwargs)

        setattr(proxy, name, on_cpu)
    for module_name in _MODULES_WITH_CUDA_FACTORIES:
        importlib.import_module(module_name).torch = proxy


def _tensor_cuda_identity():
    """LanguageModule.setup_embeddings_and_output_layer does `weight.data.cuda()` for tied
    embeddings with PP > 1 (and ~15 other `.cuda()` sites): make Tensor.cuda() return the tensor."""
    torch.Tensor.cuda = lambda self, *a, **k: self


def _clip_grads_without_cuda_check():
    """optimizer.clip_grad_by_total_norm_fp32 asserts grad.type() == 'torch.cuda.FloatTensor' and uses
    the multi-tensor-apply kernel; scale the grads in place instead (same arithmetic)."""
    from megatron.core.optimizer import clip_grads, optimizer

    def clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        attr = "decoupled_grad" if use_decoupled_grad else "grad"
        coeff = max_norm / (total_norm + 1.0e-6)
        if coeff < 1.0:
            for p in parameters:
                grad = getattr(p, attr, None)
                if grad is not None:
                    grad.detach().mul_(coeff)

    clip_grads.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32
    optimizer.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32


def _torch_norm_sequence_parallel():
    """transformer.torch_norm.WrappedTorchNorm (the local spec's norms without TE or apex) asserts
    `not config.sequence_parallel`. A torch norm is per token, so it is correct on a sequence shard;
    what SP needs is that its weight grads (partial sums over this rank's tokens) are all-reduced over
    TP, which `finalize_model_grads` does for parameters marked `sequence_parallel` (as TE's norms are).
    Build the norm without the assert and mark its parameters."""
    from megatron.core.transformer import torch_norm

    build = torch_norm.WrappedTorchNorm.__new__

    def __new__(cls, config, *args, **kwargs):
        if not config.sequence_parallel:
            return build(cls, config, *args, **kwargs)
        plain = copy.copy(config)
        plain.sequence_parallel = False
        norm = build(cls, plain, *args, **kwargs)
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    torch_norm.WrappedTorchNorm.__new__ = __new__


PATCHES = {
    "rng": _cpu_rng_tracker,
    "memory_buffer": _global_memory_buffer_on_cpu,
    "causal_mask": _causal_mask_on_cpu,
    "sliding_window_mask": _sliding_window_mask_on_cpu,
    "cuda_queries": _cuda_device_queries,
    "module_factories": _module_torch_factories,
    "tensor_cuda": _tensor_cuda_identity,
    "clip_grads": _clip_grads_without_cuda_check,
    "torch_norm_sp": _torch_norm_sequence_parallel,
}


def cpu_mode() -> bool:
    """True when the patches are (or would be) active: torch has no usable CUDA device."""
    return not torch.cuda.is_available()


def apply(only: tuple[str, ...] | None = None) -> list[str]:
    """Install the CPU patches (all, or the names in `only`) when CUDA is absent; idempotent.
    Returns the names installed by this process so far."""
    if not cpu_mode():
        return []
    for name in only or tuple(PATCHES):
        if name not in _APPLIED:
            PATCHES[name]()
            _APPLIED.append(name)
    return list(_APPLIED)


def mark_params_as_cuda(module: torch.nn.Module) -> None:
    """DistributedOptimizer and Float16Optimizer accept only params whose `.type()` is
    'torch.cuda.*Tensor' (optimizer/distrib_optimizer.py, _build_model_and_main_param_groups).
    Shadow `.type` on each parameter instance (never globally). No-op with CUDA. Call on the
    DDP-wrapped model before get_megatron_optimizer(use_distributed_optimizer=True)."""
    if not cpu_mode():
        return
    for param in module.parameters():
        real_type = param.type

        def cuda_type(*args, _real=real_type, **kwargs):
            name = _real(*args, **kwargs)
            if not args and not kwargs and name.startswith("torch.") and ".cuda." not in name:
                return name.replace("torch.", "torch.cuda.", 1)
            return name

        param.type = cuda_type
