"""The numeric check every conversion passes: same names, dtypes and shapes, outputs within tolerance.

The converted model, loaded back through aimass, and the source run the same inputs (the caller's
``data`` or rows generated from the schema); :func:`aimass.compress.report.measure` records the
error per output, and :func:`check` raises :class:`~aimass.errors.ConversionError` with that
report when any output is off by more than ``atol + rtol * max |source output|`` (integer outputs
must match exactly).

Example:
    >>> report = measured(source, converted, target="onnx", data=x)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass.compress.report import Report, measure
from aimass.errors import ConversionError

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "check", "measured"]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


def check_schema(source: Model, converted: Model) -> None:
    """Same input and output names and dtypes, or ConversionError naming the first difference."""
    for kind, a, b in (
        ("input", source.schema.inputs, converted.schema.inputs),
        ("output", source.schema.outputs, converted.schema.outputs),
    ):
        want = [(t.name, t.dtype) for t in a]
        got = [(t.name, t.dtype) for t in b]
        if want != got:
            raise ConversionError(
                f"converted {kind}s {[f'{n}: {d.value}' for n, d in got]} differ from the source's "
                f"{[f'{n}: {d.value}' for n, d in want]}"
            )


def measured(
    source: Model,
    converted: Model,
    *,
    target: str,
    data: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    repeats: int = 20,
    notes: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> Report:
    """Check ``converted`` against ``source`` and return the report (ConversionError when off)."""
    check_schema(source, converted)
    try:
        report = measure(
            source,
            converted,
            operation="convert",
            method=target,
            data=data,
            repeats=repeats,
            atol=DEFAULT_ATOL if atol is None else atol,
            rtol=DEFAULT_RTOL if rtol is None else rtol,
            notes=notes or [],
            settings=settings,
        )
    except ValueError as e:  # an output shape differs
        raise ConversionError(f"converted model disagrees with the source: {e}") from e
    check(report)
    return report


def check(report: Report) -> None:
    """Raise ConversionError (carrying ``report``) when any output exceeds its tolerance."""
    bad = [d for d in report.drift if not d.passed]
    if bad:
        what = "; ".join(
            f"{d.output!r}: max abs error {d.max_abs_error:.3g} > tolerance {d.tolerance:.3g}" for d in bad
        )
        raise ConversionError(
            f"converted model's outputs differ from the source: {what}\n{report.text()}", report=report
        )
