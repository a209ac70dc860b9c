"""Model compression: quantization, pruning and distillation, each returning a new Model with a measured report.

``compress(model, method)`` works over every backend (see :mod:`aimass.compress.quantize` and
:mod:`aimass.frameworks.torch.prune` for what each backend supports) and never changes ``model``. The
returned Model carries ``.report`` (:class:`~aimass.compress.report.Report`): file sizes, latency
at batch 1 and 32 measured in the same run, output drift, and the metric when ``labels`` are given.
With ``max_drop``, a result whose metric falls by more than that raises
:class:`~aimass.errors.CompressionRejected` carrying the report.

Methods: ``int8`` (dynamic int8), ``int8-static`` (onnx, calibrated on ``data``), ``fp16``,
``bf16`` (torch), ``prune`` (unstructured magnitude), ``prune-structured`` (torch neurons).

Example:
    >>> from aimass import Model
    >>> m = Model.load("encoder.onnx")                               # doctest: +SKIP
    >>> q = m.compress("int8", data=rows, labels=y, max_drop=0.01)   # doctest: +SKIP
    >>> print(q.report)                                              # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass.compress.distill import distill
from aimass.compress.methods import METHODS, compressor
from aimass.compress.report import Report, measure

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
    **options: Any,
) -> Model:
    """A new, compressed Model with ``.report``; the original is untouched.

    ``data`` (inputs as for ``predict``) drives calibration, the drift measurement and the
    latency inputs; without it, rows generated from the schema are used. ``labels`` adds the
    metric before/after (accuracy for integer labels, mse for float ones). ``max_drop`` rejects
    a result whose metric drops by more than that (without labels: whose top-1 agreement with the
    original falls below ``1 - max_drop``). ``repeats`` is the number of interleaved timed calls
    per batch size. Other ``options`` go to the method (``per_channel=``, ``min_cosine=``,
    ``amount=`` ...).

    Example:
        >>> q = compress(m, "int8", data=x, labels=y, max_drop=0.01)   # doctest: +SKIP
        >>> q.report.size_ratio                                        # doctest: +SKIP
    """
    from aimass.model import Model

    source = model if isinstance(model, Model) else Model.load(model)
    name = _ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; choose one of {list(METHODS)} (or distill())")
    result = compressor(source.backend_name, name)(source.backend, data=data, **options)
    candidate = Model(result.backend, name=source.name)
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
    )
    if max_drop is not None:
        enforce_max_drop(report, max_drop)
    return Model(candidate.backend, name=source.name, report=report)


def enforce_max_drop(report: Report, max_drop: float) -> None:
    """Raise :class:`~aimass.errors.CompressionRejected` when the report's metric fell by more than ``max_drop``."""
    from aimass.errors import CompressionRejected

    drop = report.metric_drop
    what = f"{report.metric} dropped by {drop:.4g}" if drop is not None else ""
    if drop is None:
        agreements = [d.top1_agreement for d in report.drift if d.top1_agreement is not None]
        if not agreements:
            raise ValueError("max_drop needs labels= (or outputs with a top-1 class to compare)")
        drop = 1.0 - min(agreements)
        what = f"top-1 agreement with the original fell to {min(agreements):.4g}"
    if drop > max_drop:
        raise CompressionRejected(
            f"{report.method} rejected: {what}, more than max_drop={max_drop}\n{report.text()}", report=report
        )
