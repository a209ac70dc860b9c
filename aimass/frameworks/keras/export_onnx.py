"""Keras / TensorFlow SavedModel -> ONNX with ``tf2onnx.convert.from_function``.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor'``), so the model is
wrapped in a ``tf.function`` whose input signature carries the schema's names and dynamic
dimensions, and that function is converted. :func:`schema_function` is shared with the TFLite
converter.

Example:
    >>> o = convert(Model.load(keras_model), "onnx")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aimass.backends.base import Backend
from aimass.dependencies import require
from aimass.errors import ConversionError, UnsupportedOperation
from aimass.frameworks.keras.backend import KerasBackend, SavedModelBackend

__all__ = ["keras_to_onnx", "schema_function"]


def schema_function(backend: Backend) -> tuple[Callable[..., list[Any]], list[Any]]:
    """``(fn, signature)``: ``fn(*tensors)`` runs the model on inputs in schema order and returns outputs
    as a list in schema order; ``signature`` is the ``tf.TensorSpec`` list with schema names and -1 as None."""
    tf = require("tensorflow", feature="the tensorflow backend", extra="tensorflow")
    schema = backend.schema
    names = schema.input_names
    signature = [
        tf.TensorSpec([None if d == -1 else d for d in t.shape], t.dtype.numpy, name=t.name) for t in schema.inputs
    ]
    if isinstance(backend, KerasBackend):
        keras_model = backend.model

        def call(*tensors: Any) -> list[Any]:
            args: Any = tensors[0] if len(tensors) == 1 else dict(zip(names, tensors, strict=True))
            return _flat(keras_model(args, training=False))

        return call, signature
    if isinstance(backend, SavedModelBackend):
        fn = backend.root.signatures[backend.signature]
        outputs = schema.output_names

        def call_signature(*tensors: Any) -> list[Any]:
            out = fn(**dict(zip(names, tensors, strict=True)))
            return [out[o] for o in outputs]

        return call_signature, signature
    raise UnsupportedOperation(f"expected a keras or tensorflow model, got the {backend.name} backend")


def _flat(out: Any) -> list[Any]:
    # Same order as the keras backend: dict outputs by sorted key, sequences in order.
    if isinstance(out, Mapping):
        return [out[k] for k in sorted(out)]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def keras_to_onnx(backend: Backend, *, opset: int | None = None) -> Any:
    """The ``onnx.ModelProto`` of a keras or SavedModel backend (names not yet aligned)."""
    tf = require("tensorflow", feature="the tensorflow backend", extra="tensorflow")
    tf2onnx = require("tf2onnx", feature="compression and conversion", extra="compress")
    call, signature = schema_function(backend)
    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(call), input_signature=signature, opset=opset)
    except Exception as e:  # tf2onnx raises ValueError/KeyError/its own errors for unsupported ops
        raise ConversionError(f"tf2onnx could not convert this model: {type(e).__name__}: {str(e)[:500]}") from e
    return proto
