"""Which tensors would live on the GPU? A CPU emulation of "the compute device is not the default one".

On a GPU node the compute device is cuda:LOCAL_RANK while a tensor built without a device lands on the
CPU, and NCCL (torch maps the default group to CUDA only) refuses it in a collective. On a CPU run every
tensor is on the same device, so nothing can fail. `track_collective_devices` makes the difference
visible in one process:

- the compute device (`megatron_wmss.distributed.compute_device`, and megatron's
  `torch.cuda.current_device`) becomes the sentinel `cpu:0`: a device argument torch accepts and that
  compares unequal to `cpu`, while the tensors still live on the CPU;
- a TorchFunctionMode tags every tensor created with the sentinel (`device=`, `.to(...)`), every module
  parameter and buffer (on a GPU, build.py moves the model to the compute device), and every result of
  an op with a tagged input; a tagged tensor reports the sentinel as its `.device`, an untagged one `cpu`;
- the torch.distributed collectives, when called from megatron_wmss code, record each untagged tensor
  they are handed (the call still runs).
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

SENTINEL = torch.device("cpu", 0)
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter", "send", "recv",
               "isend", "irecv")
_TAG = "_on_compute_device"
_DEVICE_GETTER = torch.Tensor.device.__get__  # a new method-wrapper per access: compare with ==


def _tag(value) -> None:
    for leaf in tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            setattr(leaf, _TAG, True)


def _tagged(value) -> bool:
    return isinstance(value, torch.Tensor) and getattr(value, _TAG, False)


def _explicit_device(func, args, kwargs):
    """The device this call places its result on, or None when it inherits its inputs' device."""
    if func is torch.Tensor.to:
        device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
        return None if device is None else torch.device(device)
    if func is torch.Tensor.cpu:
        return torch.device("cpu")
    device = kwargs.get("device")
    return None if device is None else torch.device(device)


class _Provenance(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == _DEVICE_GETTER:
            return SENTINEL if _tagged(args[0]) else torch.device("cpu")
        out = func(*args, **kwargs)
        device = _explicit_device(func, args, kwargs)
        if device == SENTINEL:
            _tag(out)
        elif device is not None:  # moved off the compute device; on CPU `.to("cpu")` may return itself
            if _tagged(out):
                out = out.view_as(out)
        else:
            inputs = tree_leaves((args, kwargs))
            if any(_tagged(x) for x in inputs):  # results of the op; an in-place target keeps its device
                _tag([leaf for leaf in tree_leaves(out) if not any(leaf is x for x in inputs)])
        return out


def _checked(name, collective, violations, calls):
    def wrapper(*args, **kwargs):
        caller = sys._getframe(1)
        module = caller.f_globals.get("__name__", "")
        if module.startswith("megatron_wmss"):
            site = f"{module}.{caller.f_code.co_name}"
            calls.append(site)
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, torch.Tensor) and not _tagged(leaf):
                    violations.append(f"{site} (line {caller.f_lineno}): dist.{name} of a tensor not on the "
                                      "compute device")
        return collective(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def track_collective_devices():
    """Yield (violations, calls): lists of the offending call sites and of every checked call site.
    Enter after `distributed.initialize` (which installs the CPU compat patches)."""
    violations: list[str] = []
    calls: list[str] = []
    saved = {name: getattr(dist, name) for name in COLLECTIVES}
    saved_current_device = torch.cuda.current_device
    # every module that imported the helper by name, and the helper's own module
    helper_users = [m for name, m in list(sys.modules.items())
                    if name.startswith("megatron_wmss") and hasattr(m, "compute_device")]
    saved_helpers = {m: m.compute_device for m in helper_users}
    hooks = [torch.nn.modules.module.register_module_parameter_registration_hook(lambda m, n, p: _tag(p)),
             torch.nn.modules.module.register_module_buffer_registration_hook(lambda m, n, b: _tag(b))]
    for name, collective in saved.items():
        setattr(dist, name, _checked(name, collective, violations, calls))
    for module in helper_users:
        module.compute_device = lambda: SENTINEL
    torch.cuda.current_device = lambda: SENTINEL
    try:
        with _Provenance():
            yield violations, calls
    finally:
        for hook in hooks:
            hook.remove()
        for name, collective in saved.items():
            setattr(dist, name, collective)
        for module, helper in saved_helpers.items():
            module.compute_device = helper
        torch.cuda.current_device = saved_current_device
