"""Torch quantizers: torchao int8 on every ``nn.Linear``; fp16 / bf16 weights that still take and return FP32.

Each function takes a :class:`~aimass.frameworks.torch.backend.TorchBackend` and returns a
:class:`~aimass.backends.base.Derived`; ``compress()`` finds them through the torch manifest
(``aimass/frameworks/torch/plugin.py``). :func:`module_copy` and :func:`rewrap` are shared with
the pruners of this folder.

Example:
    >>> q = compress(Model.load(net, example_input=x), "bf16")   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from aimass.backends.base import Derived, no_unknown_options
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.torch.backend import TorchBackend
from aimass.quiet import silenced

__all__ = ["bf16", "cast_module", "fp16", "int8", "module_copy", "rewrap"]


def _torch() -> Any:
    return require("torch", feature="torch compression", extra="torch")


def module_copy(backend: TorchBackend) -> Any:
    """A deep copy of the backend's ``nn.Module`` in eval mode, for tools that change weights."""
    torch = _torch()
    module = backend.module
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise UnsupportedOperation(
            f"torch compression needs an nn.Module (got {type(module).__name__}); "
            "wrap the original nn.Module with Model.load(module, example_input=...)"
        )
    return copy.deepcopy(module).eval()


def rewrap(module: Any, like: TorchBackend) -> TorchBackend:
    """A backend for ``module`` with ``like``'s schema and device (the call order follows the schema)."""
    return TorchBackend.load(module, device=like.device, schema=like.schema)


def int8(backend: TorchBackend, *, data: Any = None, **unknown: Any) -> Derived:
    """torchao int8 dynamic activation / int8 weight on every ``nn.Linear`` (``int8``)."""
    no_unknown_options(unknown)
    torch = _torch()
    module = module_copy(backend)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise UnsupportedOperation("this torch module has no nn.Linear layers: int8 has nothing to quantize")
    # torchao logs each native library it cannot load (CUDA-only builds on CPU), that triton is
    # missing, and torch's pytree deprecations of its enums: nothing about this model.
    with silenced(loggers=("torchao", "torch.utils._pytree")):
        tq = require("torchao.quantization", feature="compression and conversion", extra="compress", package="torchao")
        tq.quantize_(module, tq.Int8DynamicActivationInt8WeightConfig())
    settings = {"scheme": "torchao int8 dynamic activation / int8 weight", "linear_layers": len(linears)}
    notes = [
        "torchao's int8 kernels are fast on CPU only after torch.compile; eager latency is shown here",
    ]
    return Derived(rewrap(module, backend), settings, notes)


def _cast_inputs(dtype: Any, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.to(dtype) if a.is_floating_point() else a for a in args)


def _float32_outputs(module: Any, args: Any, out: Any) -> Any:
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _float32_outputs(module, args, v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_float32_outputs(module, args, v) for v in out)
    return out


def cast_module(module: Any, dtype: Any) -> Any:
    """``module`` in ``dtype``, still taking and returning float32 (hooks cast at the edges).

    Hooks rather than a wrapper module keep ``forward``'s signature (input names) and are traced
    by ``torch.export``, so saved packages cast too.
    """
    module = module.to(dtype)
    module.register_forward_pre_hook(functools.partial(_cast_inputs, dtype))
    module.register_forward_hook(_float32_outputs)
    return module


def _cast(backend: TorchBackend, method: str, unknown: dict[str, Any]) -> Derived:
    no_unknown_options(unknown)
    torch = _torch()
    dtype = torch.float16 if method == "fp16" else torch.bfloat16
    wrapped = cast_module(module_copy(backend), dtype)
    notes = []
    if method == "fp16":
        notes.append("fp16 matmuls on CPU are often slower than fp32; bf16 uses AVX-512 BF16 where the CPU has it")
    return Derived(rewrap(wrapped, backend), {"weights": method, "io_types": "kept (FP32)"}, notes)


def fp16(backend: TorchBackend, *, data: Any = None, **unknown: Any) -> Derived:
    """float16 weights, FP32 at the edges (``fp16``)."""
    return _cast(backend, "fp16", unknown)


def bf16(backend: TorchBackend, *, data: Any = None, **unknown: Any) -> Derived:
    """bfloat16 weights, FP32 at the edges (``bf16``)."""
    return _cast(backend, "bf16", unknown)
