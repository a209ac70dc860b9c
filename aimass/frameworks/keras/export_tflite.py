"""Keras / TensorFlow SavedModel -> TFLite with ``tf.lite.TFLiteConverter``, optionally quantized.

The converted model runs on the tflite backend (LiteRT). Its signature takes the schema's input
names and returns a dict keyed by the schema's output names, so the result is a drop-in swap.
Quantization (used by ``compress`` for keras models): ``fp16`` stores float16 weights; ``int8``
is dynamic-range int8 weights, or, when calibration ``data`` is given, full int8 kernels
calibrated on it (inputs and outputs stay float32).

Example:
    >>> t = convert(Model.load(keras_model), "tflite")        # doctest: +SKIP
    >>> q = compress(Model.load(keras_model), "int8", data=x)  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from typing import Any

from aimass.backends.base import Backend, Derived, no_unknown_options
from aimass.dependencies import require
from aimass.errors import ConversionError
from aimass.frameworks.keras.backend import KerasBackend, SavedModelBackend
from aimass.frameworks.keras.export_onnx import schema_function
from aimass.frameworks.keras.tflite import TFLiteBackend

__all__ = ["fp16", "int8", "keras_to_tflite", "tflite_bytes"]


def tflite_bytes(backend: Backend, *, quantize: str | None = None, data: Any = None, rows: int = 256) -> bytes:
    """The TFLite flatbuffer of a keras or SavedModel backend."""
    tf = require("tensorflow", feature="the tensorflow backend", extra="tensorflow")
    call, signature = schema_function(backend)
    outputs = backend.schema.output_names

    def named(*tensors: Any) -> dict[str, Any]:
        return dict(zip(outputs, call(*tensors), strict=True))

    # Through a SavedModel whose serving signature returns the schema's names. Found here:
    # from_concrete_functions without a trackable owner is deprecated and names outputs "Identity";
    # a Keras 3 model saved under a plain tf.Module converts to a TFLite file of garbage weights;
    # keras' own ExportArchive converts correctly.
    tmp = tempfile.TemporaryDirectory(prefix="aimass-tflite-")
    try:
        if isinstance(backend, KerasBackend):
            keras = require("keras", feature="the keras backend", extra="tensorflow")
            archive = keras.export.ExportArchive()
            archive.track(backend.model)
            archive.add_endpoint(name="serving_default", fn=named, input_signature=signature)
            archive.write_out(tmp.name, verbose=False)
        else:
            serve = tf.function(named, input_signature=signature).get_concrete_function()
            root = SavedModelBackend.of(backend).root
            tf.saved_model.save(root, tmp.name, signatures={"serving_default": serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp.name)
    except Exception as e:  # saving traces the model again: any error of the user's call() can come out
        tmp.cleanup()
        raise ConversionError(f"could not export the model for the TFLite converter: {type(e).__name__}: {e}") from e
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8" and data is not None:
        inputs = backend.schema.coerce(data)
        names = backend.schema.input_names
        n = min(rows, next(iter(inputs.values())).shape[0])

        def representative() -> Any:
            for i in range(n):
                yield [inputs[k][i : i + 1] for k in names]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return bytes(converter.convert())
    except Exception as e:  # the MLIR converter raises ConverterError for unsupported ops
        raise ConversionError(f"the TFLite converter failed: {type(e).__name__}: {str(e)[:500]}") from e
    finally:
        tmp.cleanup()


def _load(blob: bytes, like: Backend) -> TFLiteBackend:
    try:
        loaded = TFLiteBackend.load(blob)
    except Exception as e:
        raise ConversionError(f"the converted TFLite model does not load: {e}") from e
    # The signature keys are the schema names; keep the source's order of inputs and outputs.
    by_name = {t.name: t for t in loaded.schema.outputs}
    if set(by_name) == set(like.schema.output_names) and loaded.schema.input_names == like.schema.input_names:
        schema = loaded.schema.model_copy(update={"outputs": [by_name[n] for n in like.schema.output_names]})
        loaded = TFLiteBackend.load(blob, schema=schema)
    return loaded


def keras_to_tflite(backend: Backend) -> TFLiteBackend:
    """A keras or SavedModel backend converted to TFLite (float) and loaded on the tflite backend."""
    return _load(tflite_bytes(backend), backend)


def int8(backend: Backend, *, data: Any = None, **unknown: Any) -> Derived:
    """``compress("int8")`` for keras/SavedModel: full int8 calibrated on ``data``, else dynamic-range int8."""
    no_unknown_options(unknown)
    blob = tflite_bytes(backend, quantize="int8", data=data)
    if data is not None:
        settings = {"format": "tflite", "scheme": "full int8 (calibrated on data)", "io_types": "float32"}
    else:
        settings = {"format": "tflite", "scheme": "dynamic-range int8 weights (pass data= for full int8)"}
    return Derived(_load(blob, backend), settings)


def fp16(backend: Backend, *, data: Any = None, **unknown: Any) -> Derived:
    """``compress("fp16")`` for keras/SavedModel: TFLite with float16 weights."""
    no_unknown_options(unknown)
    return Derived(_load(tflite_bytes(backend, quantize="fp16"), backend), {"format": "tflite", "weights": "fp16"})
