"""What a compression or conversion did, measured: size, latency, output drift, metric.

:func:`measure` compares a model before and after on the same inputs, in the same process run:
sizes come from the files of a saved package, latency at batch 1 and 32 from both models timed in
alternating turns (so machine noise hits both sides alike), drift from both models' outputs on user
data, else on the example the model was loaded with, else on rows generated from the schema
(:func:`aimass.measure.sample_inputs`; ``Report.data`` and ``data_detail`` say which). Compressors
that choose between recipes leave them in ``Report.recipes`` (drawn as latency vs quality in
Jupyter) and their per-layer measurements in ``Report.layers``.

Example:
    >>> q = m.compress("int8", data=rows)   # doctest: +SKIP
    >>> print(q.report)                     # doctest: +SKIP
    >>> q.report.size_ratio, q.report.drift[0].cosine   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import os
import shutil
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from aimass import charts
from aimass.measure import Drift, batch_of, compare_outputs, human_size, sample_inputs, score_outputs, time_calls
from aimass.package import verify

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = [
    "LayerChoice",
    "Latency",
    "Recipe",
    "Report",
    "describe_data",
    "enforce_max_drop",
    "latency_before_after",
    "measure",
    "model_size",
    "recipes_svg",
    "time_in_turns",
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


class Recipe(BaseModel):
    """One recipe a compressor tried: its latency on the check inputs and its worst-row cosine to the original."""

    recipe: str
    latency_ms: float  # the whole check batch
    min_cosine: float
    chosen: bool = False
    single_ms: float | None = None  # one row of it


class LayerChoice(BaseModel):
    """One weight layer: the worst-row cosine when it alone is quantized, and what it was kept as."""

    layer: str
    op: str
    cosine_alone: float
    kept: str  # "int8" or "float"
    input_outlier: float | None = None  # max / median of the layer input's per-channel ranges


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
    data: str = "generated"  # "user": the caller's data=; "example": the load-time example; "generated"
    data_detail: str = ""  # what the check data was, in words
    metric: str | None = None
    metric_before: float | None = None
    metric_after: float | None = None
    higher_is_better: bool = True
    atol: float | None = None
    rtol: float | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    recipes: list[Recipe] = Field(default_factory=list, description="what the compressor tried, measured")
    layers: list[LayerChoice] = Field(default_factory=list, description="per-layer sensitivity, most sensitive first")

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
                    f"median of {lat.repeats} calls timed in turns, {self.threads} cores)",
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
            rows.append(("drift data", self.data_detail or f"{self.samples} {self.data} rows"))
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
        for r in self.recipes:
            mark = "  <- chosen" if r.chosen else ""
            one = (
                f" ({r.single_ms:.2f} ms for one row)" if r.single_ms is not None and r.single_ms == r.single_ms else ""
            )
            rows.append(
                (
                    "recipe",
                    f"{r.recipe}: {_latency(r.latency_ms)}{one}, min cosine {r.min_cosine:.5f}{mark}",
                )
            )
        rows.extend(("note", n) for n in self.notes)
        return rows

    def layer_table(self, limit: int = 12) -> str:
        """The per-layer table: each layer quantized alone, its worst-row cosine, and what it was kept as.

        Example:
            >>> print(q.report.layer_table())   # doctest: +SKIP
        """
        if not self.layers:
            return ""
        width = max(len(c.layer) for c in self.layers[:limit])
        lines = [f"  {'layer'.ljust(width)}  {'op':<9} cosine alone  input max/median  kept as"]
        lines += [
            f"  {c.layer.ljust(width)}  {c.op:<9} {c.cosine_alone:12.5f}  "
            f"{'' if c.input_outlier is None else f'{c.input_outlier:.1f}':>16}  {c.kept}"
            for c in self.layers[:limit]
        ]
        if len(self.layers) > limit:
            rest = self.layers[limit:]
            lines.append(
                f"  ... {len(rest)} more, least sensitive (kept as {', '.join(sorted({c.kept for c in rest}))})"
            )
        return "\n".join(lines)

    def text(self) -> str:
        """A plain-text table of the report."""
        head = f"{self.operation} {self.method}: {self.backend_before} -> {self.backend_after}"
        width = max((len(k) for k, _ in self._rows()), default=0)
        lines = [head, *(f"  {k.ljust(width)}  {v}" for k, v in self._rows())]
        if self.layers:
            lines += ["  layers, most sensitive first (each quantized alone):", self.layer_table()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def svg(self) -> list[str]:
        """Charts of the report as SVG (size, latency, drift per output): what notebooks and the dashboard show.

        Example:
            >>> q.report.svg()[0].startswith("<svg")   # doctest: +SKIP
            True
        """
        out = [
            charts.grouped_bars(
                ["artifacts"],
                {"before": [self.size_before / 1024], "after": [self.size_after / 1024]},
                title="size",
                unit="KiB",
            )
        ]
        if self.latency:
            out.append(
                charts.grouped_bars(
                    [f"batch {lat.batch}" for lat in self.latency],
                    {
                        "before": [lat.before_ms for lat in self.latency],
                        "after": [lat.after_ms for lat in self.latency],
                    },
                    title=f"latency per call (median of calls timed in turns, {self.threads} cores)",
                    unit="ms",
                )
            )
        if self.drift:
            out.append(charts.bars({d.output: d.max_abs_error for d in self.drift}, title="max abs error per output"))
        if self.recipes:
            out.append(recipes_svg(self.recipes, target=self.settings.get("min_cosine")))
        return out

    def _repr_html_(self) -> str:
        head = html.escape(f"{self.operation} {self.method}: {self.backend_before} -> {self.backend_after}")
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self._rows())
        layers = f"<pre>{html.escape(self.layer_table())}</pre>" if self.layers else ""
        return f"<div><b>{head}</b><table>{rows}</table>{''.join(self.svg())}{layers}</div>"


def _latency(ms: float) -> str:
    # recipes that miss the quality target cannot be chosen, so the compressor does not time them
    return f"{ms:.2f} ms on the check data" if np.isfinite(ms) else "not timed (below the target)"


def recipes_svg(recipes: Sequence[Recipe], *, target: float | None = None, width: int = 480, height: int = 300) -> str:
    """An SVG scatter of ``recipes``: latency (x) against worst-row cosine (y), the chosen one in red.

    Hand-written SVG (no plotting library); the dashed line is the quality target. Notebooks show
    it inside the report (:meth:`Report.svg`).

    Example:
        >>> svg = recipes_svg([Recipe(recipe="fp32", latency_ms=10.0, min_cosine=1.0),
        ...                    Recipe(recipe="int8", latency_ms=4.0, min_cosine=0.995, chosen=True)], target=0.99)
        >>> svg.startswith("<svg") and "int8 (chosen)" in svg
        True
    """
    shown = [r for r in recipes if np.isfinite(r.latency_ms) and r.min_cosine >= 0]
    if not shown:
        return ""
    left, right, top, bottom = 60, 20, 24, 45
    x1 = max(r.latency_ms for r in shown) * 1.15 or 1.0
    ys = [r.min_cosine for r in shown] + ([target] if target is not None else [])
    pad = max((1.0 - min(ys)) * 0.1, 1e-4)
    y0, y1 = min(ys) - pad, 1.0 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + x / x1 * plot_w

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * plot_h

    mid_y = top + plot_h / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{left}" y="14" font-weight="bold">recipes tried: latency vs quality</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>',
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">latency on the check data (ms)</text>',
        f'<text x="14" y="{mid_y}" text-anchor="middle" transform="rotate(-90 14 {mid_y})">worst-row cosine</text>',
        f'<text x="{left}" y="{top + plot_h + 14}" text-anchor="middle">0</text>',
        f'<text x="{left + plot_w}" y="{top + plot_h + 14}" text-anchor="end">{x1:.3g}</text>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{y1:.4f}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{y0:.4f}</text>',
    ]
    if target is not None:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(target):.1f}" y2="{py(target):.1f}" '
            f'stroke="#c60" stroke-dasharray="4 3"/><text x="{left + plot_w - 4}" y="{py(target) - 4:.1f}" '
            f'text-anchor="end" fill="#c60">target {target:g}</text>'
        )
    for r in shown:
        color, size = ("#d00", 6) if r.chosen else ("#36c", 4)
        label = html.escape(r.recipe + (" (chosen)" if r.chosen else ""))
        parts.append(
            f'<circle cx="{px(r.latency_ms):.1f}" cy="{py(r.min_cosine):.1f}" r="{size}" fill="{color}">'
            f"<title>{label}: {r.latency_ms:.2f} ms, cosine {r.min_cosine:.5f}</title></circle>"
            f'<text x="{px(r.latency_ms) + 7:.1f}" y="{py(r.min_cosine) + 4:.1f}" fill="{color}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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


def time_in_turns(
    models: Mapping[str, Model], inputs: Mapping[str, np.ndarray], *, calls: int
) -> dict[str, list[float]]:
    """Seconds of each of ``calls`` calls of every model, timed in turns so machine noise hits all alike.

    A turn is up to two calls of one model, settled first (a pause and an untimed call, see
    :func:`aimass.measure.time_calls`); the order of the models alternates (A, B, C, C, B, A ...).

    Example:
        >>> times = time_in_turns({"fp32": m, "int8": q}, x, calls=10)      # doctest: +SKIP
        >>> statistics.median(times["fp32"]) / statistics.median(times["int8"])   # doctest: +SKIP
        2.2
    """
    times: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    for i in range((calls + 1) // 2):
        n = min(2, calls - 2 * i)
        for k in names if i % 2 == 0 else reversed(names):
            call = functools.partial(models[k].predict, inputs)
            times[k].extend(time_calls(call, seconds=0.0, min_calls=n, max_calls=n, settle=True))
    return times


def latency_before_after(
    before: Model, after: Model, inputs: Mapping[str, np.ndarray], *, batches: Sequence[int], repeats: int
) -> list[Latency]:
    """Median latency of both models at each batch size, ``repeats`` calls each, timed in turns."""
    out = []
    for size in batches:
        times = time_in_turns({"before": before, "after": after}, batch_of(inputs, size), calls=repeats)
        out.append(
            Latency(
                batch=size,
                before_ms=1e3 * statistics.median(times["before"]),
                after_ms=1e3 * statistics.median(times["after"]),
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
    metric: str | None = None,
) -> Report:
    """Measure ``after`` against ``before`` on the same inputs and return the :class:`Report`.

    ``repeats`` calls of each model per batch size, timed in turns (0 skips latency).

    Example:
        >>> measure(m, q, operation="compress", method="int8", data=rows).size_ratio   # doctest: +SKIP
    """
    inputs, source = sample_inputs(before.schema, data, example=before.example)
    ref = before.predict(inputs)
    got = after.predict(inputs)
    drift = compare_outputs(ref, got, atol=atol, rtol=rtol)
    notes = list(notes)
    missing = [n for n in ref if n not in got]
    if missing:
        notes.append(f"outputs {missing} exist only before; drift covers {[n for n in ref if n in got]}")
    fields: dict[str, Any] = {}
    if labels is not None:
        name, value_before, higher = score_outputs(ref, labels, metric=metric)
        _, value_after, _ = score_outputs(got, labels, metric=metric)
        fields = {
            "metric": name,
            "metric_before": value_before,
            "metric_after": value_after,
            "higher_is_better": higher,
        }
    latency = latency_before_after(before, after, inputs, batches=LATENCY_BATCHES, repeats=repeats) if repeats else []
    settings = dict(settings or {})
    recipes = [Recipe(**r) for r in settings.pop("recipes", [])]
    layers = [LayerChoice(**c) for c in settings.pop("per_layer", [])]
    samples = next(iter(inputs.values())).shape[0] if inputs else 0
    return Report(
        operation=operation,
        method=method,
        backend_before=before.backend_name,
        backend_after=after.backend_name,
        size_before=model_size(before) if size_before is None else size_before,
        size_after=model_size(after),
        latency=latency,
        drift=drift,
        samples=samples,
        data=source,
        data_detail=describe_data(source, samples, before.example),
        atol=atol,
        rtol=rtol if atol is not None else None,
        settings=settings,
        notes=notes,
        recipes=recipes,
        layers=layers,
        **fields,
    )


def describe_data(source: str, rows: int, example: Mapping[str, np.ndarray] | None = None) -> str:
    """What a check ran on, in words, for the report.

    Example:
        >>> describe_data("user", 64)
        "64 rows of the caller's data="
    """
    if source == "user":
        return f"{rows} rows of the caller's data="
    if source == "example":
        given = next(iter(example.values())).shape[0] if example else rows // 2
        return f"{rows} rows from the load-time example ({given} given, then a copy with float inputs varied by 1%)"
    return f"{rows} rows generated from the schema (no data= and no load-time example)"


def enforce_max_drop(report: Report, max_drop: float) -> None:
    """Raise :class:`~aimass.errors.CompressionRejected` when the report's metric fell by more than ``max_drop``.

    Beside :class:`Report`, so that ``compress`` and ``compress.distill`` both reach it without importing each other.

    Example:
        >>> enforce_max_drop(model.report, max_drop=0.01)   # doctest: +SKIP
    """
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
