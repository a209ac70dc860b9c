"""Model conversion between formats, each result loaded back through aimass and checked numerically.

Supported (source backend -> target): torch -> onnx, keras or tensorflow (SavedModel) ->
onnx, xgboost -> onnx, keras or tensorflow (SavedModel) -> tflite. The returned Model answers to
the source's input and output names (a drop-in swap) and carries ``.report``: the measured error
per output against the tolerance, file sizes and latency of both. Outputs further apart than
``atol + rtol * max |source|`` raise :class:`~aimass.errors.ConversionError` with the report.

Example:
    >>> from aimass import Model
    >>> o = Model.load(net, example_input={"x": x}).convert("onnx", data=x)   # doctest: +SKIP
    >>> o.report.max_abs_error, o.backend_name                               # doctest: +SKIP
    (2.4e-07, 'onnx')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass.errors import ConversionError, UnsupportedOperation

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["SUPPORTED", "convert"]

SUPPORTED: dict[tuple[str, str], str] = {
    ("torch", "onnx"): "aimass.frameworks.torch.export_onnx:torch_to_onnx",
    ("keras", "onnx"): "aimass.frameworks.keras.export_onnx:keras_to_onnx",
    ("tensorflow", "onnx"): "aimass.frameworks.keras.export_onnx:keras_to_onnx",
    ("xgboost", "onnx"): "aimass.frameworks.xgboost.export_onnx:xgboost_to_onnx",
    ("sklearn", "onnx"): "aimass.frameworks.sklearn.export:to_onnx",
    ("keras", "tflite"): "aimass.frameworks.keras.export_tflite:keras_to_tflite",
    ("tensorflow", "tflite"): "aimass.frameworks.keras.export_tflite:keras_to_tflite",
}


def convert(
    model: Any,
    target: str = "onnx",
    *,
    data: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    repeats: int = 20,
    **options: Any,
) -> Model:
    """A new Model in ``target`` format, checked against ``model`` on ``data`` (or generated rows).

    ``atol``/``rtol`` set the tolerance (default 1e-4 + 1e-3 * max |source output|); ``repeats``
    is the number of interleaved timed calls per batch size in the report (0 skips timing).
    Other ``options`` go to the converter (``opset=``; torch: ``dynamo=False`` for the legacy
    exporter).

    Example:
        >>> o = convert(m, "onnx", data=x, atol=1e-5)   # doctest: +SKIP
    """
    import importlib

    from aimass.convert.check import measured
    from aimass.model import Model

    source = model if isinstance(model, Model) else Model.load(model)
    target = target.lower()
    key = (source.backend_name, target)
    if source.backend_name == target:
        raise UnsupportedOperation(f"the model already runs on the {target} backend")
    if key not in SUPPORTED:
        pairs = ", ".join(f"{a} -> {b}" for a, b in SUPPORTED)
        hint = ""
        if target == "tflite" and source.backend_name in ("torch", "onnx"):
            hint = " (no maintained torch/onnx -> TFLite converter installs beside torch here)"
        raise UnsupportedOperation(
            f"cannot convert a {source.backend_name} model to {target}{hint}; supported: {pairs}"
        )
    module, _, fn = SUPPORTED[key].partition(":")
    result = getattr(importlib.import_module(module), fn)(source, **options)
    if target == "onnx":
        from aimass.frameworks.onnx.graph import align

        proto = align(result, source.schema)
        try:
            converted = Model.load(proto.SerializeToString(), backend="onnx", name=source.name)
        except Exception as e:
            raise ConversionError(f"the converted ONNX model does not load: {e}") from e
    else:
        converted = result
    report = measured(source, converted, target=target, data=data, atol=atol, rtol=rtol, repeats=repeats)
    converted.report = report
    return converted
