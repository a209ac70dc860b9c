"""The numeric check every conversion passes: same names, dtypes and shapes, outputs within tolerance.

The converted model, loaded back through aimass, and the source run the same inputs:

* the caller's ``data``;
* else the example the source was loaded with (``example_input=``, kept in packages), its rows
  plus a copy with float inputs varied (:func:`aimass.measure.example_rows`); rows generated
  within the example's ranges (:func:`aimass.measure.generated_rows`) are checked too, and a
  difference there is reported in a note, never raised: generated rows may not be inputs the
  model was made for;
* else rows generated from the schema. When the model takes integer or BYTES inputs (token ids,
  masks, categories), generated values may lie outside its domain, so a difference on them is
  not a failure either: the report says so, a warning asks for ``data=``.

:func:`aimass.compress.report.measure` records the error per output, and :func:`check` raises
:class:`~aimass.errors.ConversionError` with that report when any output is off by more than
``atol + rtol * max |source output|`` (integer outputs must match exactly).

Example:
    >>> report = measured(source, converted, target="onnx", data=x)   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from aimass.compress.report import Report, measure
from aimass.errors import ConversionError
from aimass.measure import compare_outputs, generated_rows
from aimass.schema import DType

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
    bad = [d for d in report.drift if not d.passed]
    if bad and report.data == "generated" and not _all_float_inputs(source):
        note = (
            f"outputs differ on rows generated from the schema ({_what(bad)}), but this model takes integer or "
            "BYTES inputs and generated values may be outside its domain (token ids, masks, categories): not "
            "treated as a failure. Pass data= with real inputs, or load with example_input=, to check the conversion"
        )
        report.notes.append(note)
        warnings.warn(note, UserWarning, stacklevel=3)
        return report
    check(report)
    if report.data == "example":
        report.notes.append(_generated_check(source, converted, report))
    return report


def _all_float_inputs(model: Model) -> bool:
    return all(t.dtype in (DType.FP16, DType.FP32, DType.FP64) for t in model.schema.inputs)


def _what(drifts: list[Any]) -> str:
    return "; ".join(f"{d.output!r}: max abs error {d.max_abs_error:.3g} > tolerance {d.tolerance:.3g}" for d in drifts)


def _generated_check(source: Model, converted: Model, report: Report, rows: int = 32) -> str:
    """A note on rows generated within the example's ranges: a second look, never a failure."""
    inputs = generated_rows(source.schema, rows, example=source.example)
    try:
        drifts = compare_outputs(
            source.predict(inputs), converted.predict(inputs), atol=report.atol, rtol=report.rtol or 0.0
        )
    except Exception as e:  # generated rows may be inputs the model refuses
        return f"also tried {rows} rows generated within the example's ranges: the source refused them ({e})"
    bad = [d for d in drifts if not d.passed]
    if not bad:
        return f"also within tolerance on {rows} rows generated within the example's ranges"
    return (
        f"on {rows} rows generated within the example's ranges the outputs differ ({_what(bad)}); generated "
        "rows may be outside the model's domain, so this is not a failure; pass data= to check on real inputs"
    )


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
