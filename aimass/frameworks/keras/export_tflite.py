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
from typing import TYPE_CHECKING, Any

from aimass.dependencies import require
from aimass.errors import ConversionError

if TYPE_CHECKING:
    from aimass.compress.quantize import Quantized
    from aimass.model import Model

__all__ = ["keras_to_tflite", "keras_to_tflite_quantized", "tflite_bytes"]


def tflite_bytes(model: Model, *, quantize: str | None = None, data: Any = None, rows: int = 256) -> bytes:
    """The TFLite flatbuffer of a keras/SavedModel-backed ``model``."""
    from aimass.frameworks.keras.export_onnx import schema_function

    tf = require("tensorflow", feature="the tensorflow backend", extra="tensorflow")
    call, signature = schema_function(model)
    outputs = model.schema.output_names

    def named(*tensors: Any) -> dict[str, Any]:
        return dict(zip(outputs, call(*tensors), strict=True))

    # Through a SavedModel whose serving signature returns the schema's names. Found here:
    # from_concrete_functions without a trackable owner is deprecated and names outputs "Identity";
    # a Keras 3 model saved under a plain tf.Module converts to a TFLite file of garbage weights;
    # keras' own ExportArchive converts correctly.
    tmp = tempfile.TemporaryDirectory(prefix="aimass-tflite-")
    try:
        if model.backend_name == "keras":
            keras = require("keras", feature="the keras backend", extra="tensorflow")
            archive = keras.export.ExportArchive()
            archive.track(model.backend.model)  # type: ignore[attr-defined]
            archive.add_endpoint(name="serving_default", fn=named, input_signature=signature)
            archive.write_out(tmp.name, verbose=False)
        else:
            serve = tf.function(named, input_signature=signature).get_concrete_function()
            tf.saved_model.save(model.backend.root, tmp.name, signatures={"serving_default": serve})  # type: ignore[attr-defined]
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp.name)
    except Exception as e:  # saving traces the model again: any error of the user's call() can come out
        tmp.cleanup()
        raise ConversionError(f"could not export the model for the TFLite converter: {type(e).__name__}: {e}") from e
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8" and data is not None:
        inputs = model.schema.coerce(data)
        names = model.schema.input_names
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


def _load(blob: bytes, like: Model) -> Model:
    from aimass.model import Model

    try:
        loaded = Model.load(blob, backend="tflite", name=like.name)
    except Exception as e:
        raise ConversionError(f"the converted TFLite model does not load: {e}") from e
    # The signature keys are the schema names; keep the source's order of inputs and outputs.
    by_name = {t.name: t for t in loaded.schema.outputs}
    if set(by_name) == set(like.schema.output_names) and loaded.schema.input_names == like.schema.input_names:
        schema = loaded.schema.model_copy(update={"outputs": [by_name[n] for n in like.schema.output_names]})
        loaded = Model.load(blob, backend="tflite", name=like.name, schema=schema)
    return loaded


def keras_to_tflite(model: Model) -> Model:
    """``model`` converted to TFLite (float) and loaded back through aimass."""
    return _load(tflite_bytes(model), model)


def keras_to_tflite_quantized(model: Model, method: str, *, data: Any = None, **unknown: Any) -> Quantized:
    """``compress`` for keras/SavedModel models: TFLite with int8 or fp16 weights."""
    from aimass.compress.quantize import Quantized, _no_unknown

    _no_unknown(unknown)
    blob = tflite_bytes(model, quantize=method, data=data)
    if method == "fp16":
        settings = {"format": "tflite", "weights": "fp16"}
    elif data is not None:
        settings = {"format": "tflite", "scheme": "full int8 (calibrated on data)", "io_types": "float32"}
    else:
        settings = {"format": "tflite", "scheme": "dynamic-range int8 weights (pass data= for full int8)"}
    return Quantized(_load(blob, model), settings)
