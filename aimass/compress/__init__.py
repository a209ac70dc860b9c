"""Model compression: quantization, pruning and distillation, each returning a new Model with a measured report.

``compress(model, method)`` works over every backend (see :mod:`aimass.compress.quantize` and
:mod:`aimass.frameworks.torch.prune` for what each backend supports) and never changes ``model``. The
returned Model carries ``.report`` (:class:`~aimass.compress.report.Report`): file sizes, latency
at batch 1 and 32 measured in the same run, output drift, and the metric when ``labels`` are given.
With ``max_drop``, a result whose metric falls by more than that raises
:class:`~aimass.errors.CompressionRejected` carrying the report.

Methods: ``int8`` (dynamic int8; onnx: fused first, layers chosen by measured drift),
``int8-static`` (onnx, calibrated on ``data``), ``fp16``, ``bf16`` (torch), ``prune``
(unstructured magnitude), ``prune-structured`` (torch neurons), ``distill`` (torch transformers:
``layers=3`` keeps every other block and trains it on ``data`` to match the original).

Example:
    >>> from aimass import Model
    >>> m = Model.load("encoder.onnx")                               # doctest: +SKIP
    >>> q = m.compress("int8", data=rows, labels=y, max_drop=0.01)   # doctest: +SKIP
    >>> print(q.report)                                              # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass.compress.distill import distill, distill_layers
from aimass.compress.methods import METHODS, compressor
from aimass.compress.report import Report, enforce_max_drop, measure
from aimass.measure import sample_inputs

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["METHODS", "Report", "compress", "distill", "enforce_max_drop"]

_ALIASES = {"dynamic-int8": "int8", "int8-dynamic": "int8", "static-int8": "int8-static", "prune-unstructured": "prune"}


def compress(
    model: Any,
    method: str = "int8",
    *,
    data: Any = None,
    labels: Any = None,
    max_drop: float | None = None,
    repeats: int = 20,
    metric: str | None = None,
    **options: Any,
) -> Model:
    """A new, compressed Model with ``.report``; the original is untouched.

    ``data`` (inputs as for ``predict``) drives calibration, the drift measurement and the
    latency inputs; without it, the example the model was loaded with (``example_input=``,
    kept in saved packages), else rows generated from the schema; the report says which.
    ``labels`` adds the metric before/after (accuracy for integer labels of class scores, mse
    for float ones, recall@10 for group labels of embeddings; ``metric="recall@5"`` picks
    another k). ``max_drop`` rejects
    a result whose metric drops by more than that (without labels: whose top-1 agreement with the
    original falls below ``1 - max_drop``). ``repeats`` is the number of timed calls of each model
    per batch size. Other ``options`` go to the method (``per_channel=``, ``min_cosine=``,
    ``amount=`` ...).

    Example:
        >>> q = compress(m, "int8", data=x, labels=y, max_drop=0.01)   # doctest: +SKIP
        >>> q.report.size_ratio                                        # doctest: +SKIP
    """
    from aimass.model import Model

    source = model if isinstance(model, Model) else Model.load(model)
    name = _ALIASES.get(method, method)
    if name == "distill":
        return distill_layers(
            source, data=data, labels=labels, max_drop=max_drop, repeats=repeats, metric=metric, **options
        )
    if name not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; choose one of {list(METHODS)} (or distill())")
    tool_data = (
        data
        if data is not None or not source.example
        else sample_inputs(source.schema, None, example=source.example)[0]
    )
    result = compressor(source.backend_name, name)(source.backend, data=tool_data, **options)
    candidate = Model(result.backend, name=source.name, example=source.example)
    report = measure(
        source,
        candidate,
        operation="compress",
        method=name,
        data=data,
        labels=labels,
        repeats=repeats,
        settings=result.settings,
        notes=result.notes,
        metric=metric,
    )
    if max_drop is not None:
        enforce_max_drop(report, max_drop)
    return Model(candidate.backend, name=source.name, report=report, example=source.example)
