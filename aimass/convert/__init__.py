"""Model conversion between formats, each result loaded back through aimass and checked numerically.

Supported (source backend -> target): torch -> onnx, keras or tensorflow (SavedModel) ->
onnx, xgboost -> onnx, keras or tensorflow (SavedModel) -> tflite. The returned Model answers to
the source's input and output names (a drop-in swap) and carries ``.report``: the measured error
per output against the tolerance, file sizes and latency of both. Outputs further apart than
``atol + rtol * max |source|`` raise :class:`~aimass.errors.ConversionError` with the report.
Without ``data=`` the check runs on the example the model was loaded with (see
:mod:`aimass.convert.check` for what happens when there is none). ``optimize=True`` also fuses
the graph where the target has an optimizer (ONNX: transformer attention, LayerNorm, GELU), and
the report gives the plain export's latency beside the fused one's. Each framework declares its
exporters (and the ONNX folder its importer and optimizer) in its manifest; see :mod:`aimass.plugins`.

Example:
    >>> from aimass import Model
    >>> o = Model.load(net, example_input={"x": x}).convert("onnx", data=x)   # doctest: +SKIP
    >>> o.report.max_abs_error, o.backend_name                               # doctest: +SKIP
    (2.4e-07, 'onnx')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass import plugins
from aimass.errors import UnsupportedOperation

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["convert"]


def convert(
    model: Any,
    target: str = "onnx",
    *,
    data: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    repeats: int = 20,
    optimize: bool = False,
    **options: Any,
) -> Model:
    """A new Model in ``target`` format, checked against ``model`` on ``data`` (else its load-time example).

    ``atol``/``rtol`` set the tolerance (default 1e-4 + 1e-3 * max |source output|); ``repeats``
    is the number of timed calls per batch size in the report (0 skips timing).
    ``optimize=True`` fuses the converted graph (the fast fp32 baseline; the target's optimizer).
    Other ``options`` go to the converter (``opset=``; torch: ``dynamo=False`` for the legacy
    exporter).

    Example:
        >>> o = convert(m, "onnx", data=x, atol=1e-5)   # doctest: +SKIP
    """
    from aimass.backends.base import Backend
    from aimass.convert.check import measured
    from aimass.model import Model

    optimizers = plugins.keys(plugins.OPTIMIZER)
    if optimize and target.lower() not in optimizers:
        raise UnsupportedOperation(f"optimize=True is available for {', '.join(optimizers)} targets, not {target}")

    source = model if isinstance(model, Model) else Model.load(model)
    target = target.lower()
    key = (source.backend_name, target)
    if source.backend_name == target:
        raise UnsupportedOperation(f"the model already runs on the {target} backend")
    exporters = plugins.keys(plugins.EXPORTER)
    if key not in exporters:
        pairs = ", ".join(f"{a} -> {b}" for a, b in exporters)
        hint = plugins.entries(plugins.CONVERT_HINT).get(target, "")
        raise UnsupportedOperation(
            f"cannot convert a {source.backend_name} model to {target}{hint}; supported: {pairs}"
        )
    result = plugins.lookup(plugins.EXPORTER, key)(source.backend, **options)
    if not isinstance(result, Backend):
        result = plugins.lookup(plugins.IMPORTER, target)(result, source.schema)
    converted = Model(result, name=source.name, example=source.example)
    notes: list[str] = []
    settings: dict[str, Any] = {}
    plain = None
    if optimize:
        derived = plugins.lookup(plugins.OPTIMIZER, target)(converted.backend)
        if derived is None:
            notes.append("optimize=True: nothing in this graph could be fused; the plain export is kept")
        else:
            plain, converted = converted, Model(derived.backend, name=source.name, example=source.example)
            settings.update(derived.settings)
            notes.extend(derived.notes)
    report = measured(
        source,
        converted,
        target=target,
        data=data,
        atol=atol,
        rtol=rtol,
        repeats=repeats,
        notes=notes,
        settings=settings,
    )
    if plain is not None and repeats:
        report.notes.append(_both_baselines(plain, converted, data, repeats))
    return Model(converted.backend, name=source.name, report=report, example=source.example)


def _both_baselines(plain: Model, fused: Model, data: Any, repeats: int) -> str:
    """The plain export's latency against the fused graph's, timed in turns: the two fp32 baselines."""
    from aimass.compress.report import latency_before_after
    from aimass.measure import sample_inputs

    inputs, _ = sample_inputs(plain.schema, data, example=plain.example)
    lats = latency_before_after(plain, fused, inputs, batches=(1, 32), repeats=repeats)
    parts = [f"b={lat.batch} {lat.before_ms:.2f} ms -> {lat.after_ms:.2f} ms ({lat.speedup:.2f}x)" for lat in lats]
    return "fp32 baselines, plain export -> fused: " + ", ".join(parts)
