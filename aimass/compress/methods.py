"""Which framework tool compresses which backend: a table of dotted paths, imported only when chosen.

``COMPRESSORS[(backend, method)]`` is ``"module:function"``; the function takes the backend and
``data=`` plus method options and returns a :class:`~aimass.backends.base.Derived`. Adding a
framework's quantizer is one line here; nothing in ``compress`` names a backend.

Example:
    >>> sorted(supported("torch"))
    ['bf16', 'fp16', 'int8', 'prune', 'prune-structured']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aimass.dependencies import import_target
from aimass.errors import UnsupportedOperation

__all__ = ["COMPRESSORS", "METHODS", "WRAPPED", "compressor", "supported"]

METHODS = ("int8", "int8-static", "fp16", "bf16", "prune", "prune-structured")

COMPRESSORS: dict[tuple[str, str], str] = {
    ("onnx", "int8"): "aimass.frameworks.onnx.quantize:dynamic_int8",
    ("onnx", "int8-static"): "aimass.frameworks.onnx.quantize:static_int8",
    ("onnx", "fp16"): "aimass.frameworks.onnx.quantize:fp16",
    ("torch", "int8"): "aimass.frameworks.torch.quantize:int8",
    ("torch", "fp16"): "aimass.frameworks.torch.quantize:fp16",
    ("torch", "bf16"): "aimass.frameworks.torch.quantize:bf16",
    ("torch", "prune"): "aimass.frameworks.torch.prune:unstructured",
    ("torch", "prune-structured"): "aimass.frameworks.torch.prune:structured",
    ("keras", "int8"): "aimass.frameworks.keras.export_tflite:int8",
    ("keras", "fp16"): "aimass.frameworks.keras.export_tflite:fp16",
    ("tensorflow", "int8"): "aimass.frameworks.keras.export_tflite:int8",
    ("tensorflow", "fp16"): "aimass.frameworks.keras.export_tflite:fp16",
}

# Backends that hold a network on another backend (a text model: tokenizer, network, head) compress
# that network with its own backend's tool from COMPRESSORS for the same method:
# backend -> "module:function(backend, tool_for, *, data, **options) -> Derived", where
# tool_for(network_backend) returns that tool.
WRAPPED: dict[str, str] = {
    "transformers": "aimass.frameworks.transformers.compress:compress_network",
}

# Why a backend has no compressor at all, where the reason helps more than the list of what exists.
HINTS: dict[str, str] = {
    "xgboost": "xgboost trees have no numeric quantization (their thresholds are exact float splits); "
    "convert to ONNX instead with m.convert('onnx'), which is usually faster to serve",
}


def supported(backend: str) -> list[str]:
    """Methods the table holds for ``backend``."""
    return [method for (b, method) in COMPRESSORS if b == backend]


def compressor(backend: str, method: str) -> Callable[..., Any]:
    """The function that applies ``method`` to a ``backend`` model, or UnsupportedOperation saying what exists."""
    if (backend, method) not in COMPRESSORS and backend in WRAPPED:
        wrapped = import_target(WRAPPED[backend])
        return functools.partial(wrapped, tool_for=lambda network: compressor(network.name, method))
    try:
        target = COMPRESSORS[(backend, method)]
    except KeyError:
        if backend in HINTS:
            raise UnsupportedOperation(HINTS[backend]) from None
        table: dict[str, list[str]] = {}
        for b, m in COMPRESSORS:
            table.setdefault(b, []).append(m)
        listed = "; ".join(f"{b}: {', '.join(ms)}" for b, ms in table.items())
        raise UnsupportedOperation(
            f"compression {method!r} is not available for the {backend} backend; supported: {listed}"
        ) from None
    fn: Callable[..., Any] = import_target(target)
    return fn
