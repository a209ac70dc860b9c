"""What a compression or conversion did, measured: size, latency, output drift, metric.

:func:`measure` compares a model before and after on the same inputs, in the same process run:
sizes come from the files of a saved package, latency at batch 1 and 32 from interleaved calls of
both models (so machine noise hits both sides alike), drift from both models' outputs on user
data (or on :meth:`~aimass.schema.Schema.example` data when none is given).

Example:
    >>> q = m.compress("int8", data=rows)   # doctest: +SKIP
    >>> print(q.report)                     # doctest: +SKIP
    >>> q.report.size_ratio, q.report.drift[0].cosine   # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from aimass.measure import Drift, batch_of, compare_outputs, human_size, sample_inputs, score_outputs
from aimass.package import verify

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = [
    "Latency",
    "Report",
    "measure",
    "model_size",
]

LATENCY_BATCHES = (1, 32)


class Latency(BaseModel):
    """Median milliseconds per ``predict`` call at one batch size, before and after."""

    batch: int
    before_ms: float
    after_ms: float
    repeats: int

    @property
    def speedup(self) -> float:
        """``before / after``: above 1 means the new model is faster."""
        return self.before_ms / self.after_ms if self.after_ms > 0 else float("inf")


class Report(BaseModel):
    """The measured outcome of a compression or conversion (``print`` it, or show it in Jupyter)."""

    operation: str  # "compress", "convert" or "distill"
    method: str
    backend_before: str
    backend_after: str
    size_before: int = Field(description="bytes of the saved package's artifacts")
    size_after: int
    latency: list[Latency] = Field(default_factory=list)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, description="CPU cores visible to the run")
    drift: list[Drift] = Field(default_factory=list)
    samples: int = 0
    data: str = "generated"  # "user" when drift was measured on the caller's data
    metric: str | None = None
    metric_before: float | None = None
    metric_after: float | None = None
    higher_is_better: bool = True
    atol: float | None = None
    rtol: float | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    # -- derived figures -----------------------------------------------------------------------

    @property
    def size_ratio(self) -> float:
        """``size_before / size_after``: above 1 means smaller."""
        return self.size_before / self.size_after if self.size_after else float("inf")

    @property
    def metric_drop(self) -> float | None:
        """How much worse the metric got (positive = worse), in the metric's own units."""
        if self.metric_before is None or self.metric_after is None:
            return None
        diff = self.metric_before - self.metric_after
        return diff if self.higher_is_better else -diff

    @property
    def max_abs_error(self) -> float:
        """The largest max abs error over all outputs."""
        return max((d.max_abs_error for d in self.drift), default=0.0)

    @property
    def cosine(self) -> float | None:
        """The lowest mean cosine similarity over float outputs."""
        values = [d.cosine for d in self.drift if d.cosine is not None]
        return min(values) if values else None

    def latency_at(self, batch: int) -> Latency | None:
        return next((lat for lat in self.latency if lat.batch == batch), None)

    # -- views -----------------------------------------------------------------------------------

    def _rows(self) -> list[tuple[str, str]]:
        size = f"{human_size(self.size_before)} -> {human_size(self.size_after)}"
        rows = [("size", f"{size} ({_ratio(self.size_ratio, 'smaller', 'larger')})")]
        for lat in self.latency:
            rows.append(
                (
                    f"latency b={lat.batch}",
                    f"{lat.before_ms:.3f} ms -> {lat.after_ms:.3f} ms ({_ratio(lat.speedup, 'faster', 'slower')}; "
                    f"median of {lat.repeats} interleaved calls, {self.threads} cores)",
                )
            )
        for d in self.drift:
            parts = [f"max abs {d.max_abs_error:.3g}", f"mean abs {d.mean_abs_error:.3g}"]
            if d.cosine is not None:
                parts.append(f"cosine {d.cosine:.5f} (min {d.min_cosine:.5f})")
            if d.top1_agreement is not None:
                parts.append(f"top-1 agreement {100 * d.top1_agreement:.1f}%")
            if d.tolerance is not None:
                parts.append(f"tolerance {d.tolerance:.3g} {'ok' if d.passed else 'EXCEEDED'}")
            rows.append((f"drift {d.output!r}", ", ".join(parts)))
        if self.drift:
            rows.append(("drift data", f"{self.samples} {self.data} rows"))
        if self.metric is not None and self.metric_drop is not None:
            rows.append(
                (
                    "metric",
                    f"{self.metric} {self.metric_before:.4g} -> {self.metric_after:.4g} (drop {self.metric_drop:+.4g})",
                )
            )
        if self.atol is not None:
            rows.append(("tolerance", f"max abs error <= {self.atol:g} + {self.rtol:g} * max |reference|"))
        if self.settings:
            rows.append(("settings", ", ".join(f"{k}={v}" for k, v in self.settings.items())))
        rows.extend(("note", n) for n in self.notes)
        return rows

    def text(self) -> str:
        """A plain-text table of the report."""
        head = f"{self.operation} {self.method}: {self.backend_before} -> {self.backend_after}"
        width = max((len(k) for k, _ in self._rows()), default=0)
        return "\n".join([head, *(f"  {k.ljust(width)}  {v}" for k, v in self._rows())])

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        head = html.escape(f"{self.operation} {self.method}: {self.backend_before} -> {self.backend_after}")
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self._rows())
        return f"<div><b>{head}</b><table>{rows}</table></div>"


def _ratio(r: float, better: str, worse: str) -> str:
    return f"{r:.2f}x {better}" if r >= 1 else f"{1 / r:.2f}x {worse}"


# -- measuring ---------------------------------------------------------------------------------------


def model_size(model: Model) -> int:
    """Bytes of the artifacts a saved package of ``model`` holds (the files, not an estimate).

    Example:
        >>> model_size(m)   # doctest: +SKIP
        12529
    """
    tmp = Path(tempfile.mkdtemp(prefix="aimass-size-"))
    try:
        pkg = model.save(tmp / "pkg")
        return sum((pkg / a.path).stat().st_size for a in verify(pkg).artifacts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _time_call(model: Model, inputs: dict[str, np.ndarray]) -> float:
    t = time.perf_counter()
    model.predict(inputs)
    return time.perf_counter() - t


def time_interleaved(
    before: Model, after: Model, inputs: Mapping[str, np.ndarray], *, batches: Sequence[int], repeats: int
) -> list[Latency]:
    """Median latency of both models at each batch size, calls interleaved (order alternating)."""
    out = []
    for size in batches:
        x = batch_of(inputs, size)
        for m in (before, after):  # warm-up: first calls allocate and pick kernels
            m.predict(x)
            m.predict(x)
        tb: list[float] = []
        ta: list[float] = []
        for i in range(repeats):
            if i % 2:
                ta.append(_time_call(after, x))
                tb.append(_time_call(before, x))
            else:
                tb.append(_time_call(before, x))
                ta.append(_time_call(after, x))
        out.append(
            Latency(
                batch=size,
                before_ms=1e3 * statistics.median(tb),
                after_ms=1e3 * statistics.median(ta),
                repeats=repeats,
            )
        )
    return out


def measure(
    before: Model,
    after: Model,
    *,
    operation: str,
    method: str,
    data: Any = None,
    labels: Any = None,
    repeats: int = 20,
    atol: float | None = None,
    rtol: float = 0.0,
    settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    size_before: int | None = None,
) -> Report:
    """Measure ``after`` against ``before`` on the same inputs and return the :class:`Report`.

    ``repeats`` interleaved calls per batch size (0 skips latency).

    Example:
        >>> measure(m, q, operation="compress", method="int8", data=rows).size_ratio   # doctest: +SKIP
    """
    inputs, source = sample_inputs(before.schema, data)
    ref = before.predict(inputs)
    got = after.predict(inputs)
    drift = compare_outputs(ref, got, atol=atol, rtol=rtol)
    notes = list(notes)
    missing = [n for n in ref if n not in got]
    if missing:
        notes.append(f"outputs {missing} exist only before; drift covers {[n for n in ref if n in got]}")
    fields: dict[str, Any] = {}
    if labels is not None:
        name, value_before, higher = score_outputs(ref, labels)
        _, value_after, _ = score_outputs(got, labels)
        fields = {
            "metric": name,
            "metric_before": value_before,
            "metric_after": value_after,
            "higher_is_better": higher,
        }
    latency = time_interleaved(before, after, inputs, batches=LATENCY_BATCHES, repeats=repeats) if repeats else []
    return Report(
        operation=operation,
        method=method,
        backend_before=before.backend_name,
        backend_after=after.backend_name,
        size_before=model_size(before) if size_before is None else size_before,
        size_after=model_size(after),
        latency=latency,
        drift=drift,
        samples=next(iter(inputs.values())).shape[0] if inputs else 0,
        data=source,
        atol=atol,
        rtol=rtol if atol is not None else None,
        settings=dict(settings or {}),
        notes=notes,
        **fields,
    )
