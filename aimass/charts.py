"""Small charts as inline SVG text: bars, grouped bars, shares and lines, with no dependency.

One drawing code for the dashboard (``aimass serve`` / ``aimass ui``) and for notebooks: reports,
listings and evaluations put the same SVG in their ``_repr_html_``. SVG rendered on the server
needs no JavaScript library, no CDN and no build step, works offline, and is a string a test can
read. Labels are escaped; values that are None or not finite are left out (a line breaks there).

Example:
    >>> svg = bars({"accuracy": 0.97, "f1": 0.95}, title="metrics")
    >>> svg.startswith("<svg") and 'data-points="2"' in svg
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "bars", "grouped_bars", "lines", "shares"]

# Tableau 10: distinct hues that stay readable for the common kinds of colour blindness.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'
_ROW = 20  # pixels per bar row
_LABEL = 130  # pixels for bar labels


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def _ok(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _open(title: str, width: int, height: int, points: int, series: int) -> str:
    label = html.escape(title, quote=True)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="aimass-chart" role="img" aria-label="{label}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" data-points="{points}" '
        f'data-series="{series}"><title>{label}</title>'
        f'<text x="0" y="13" {_FONT} font-weight="bold">{html.escape(title)}</text>'
    )


def _empty(title: str, width: int, message: str = "no data yet") -> str:
    return _open(title, width, 40, 0, 0) + f'<text x="0" y="32" {_FONT} fill="#777">{html.escape(message)}</text></svg>'


def _legend(names: Sequence[str], y: int, width: int = 10_000) -> tuple[str, int]:
    """Colour keys, wrapped to ``width``; returns the markup and the number of rows used."""
    out, x, rows = [], 0, 1
    for i, name in enumerate(names):
        step = 24 + 7 * len(name)
        if x and x + step > width:
            x, y, rows = 0, y + 15, rows + 1
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{y}" {_FONT}>{html.escape(name)}</text>'
        )
        x += step
    return "".join(out), rows


def bars(
    values: Mapping[str, float | None],
    *,
    title: str = "",
    unit: str = "",
    threshold: float | None = None,
    width: int = 420,
) -> str:
    """Horizontal bars, one per key; ``threshold`` draws a dashed line (a drift limit, a gate).

    Example:
        >>> "threshold" in bars({"x[0]": 0.05, "x[1]": 0.4}, title="PSI", threshold=0.2)
        True
    """
    return grouped_bars(
        list(values), {"": [values[k] for k in values]}, title=title, unit=unit, threshold=threshold, width=width
    )


def grouped_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    unit: str = "",
    threshold: float | None = None,
    width: int = 420,
) -> str:
    """Horizontal bars per label, one bar per series (``{"before": [...], "after": [...]}``).

    Example:
        >>> svg = grouped_bars(["size"], {"before": [100.0], "after": [25.0]}, title="size", unit="bytes")
        >>> 'data-series="2"' in svg
        True
    """
    names = list(series)
    finite = [v for vs in series.values() for v in vs if _ok(v)]
    if not labels or not finite:
        return _empty(title, width)
    limit = abs(threshold) if threshold is not None and _ok(threshold) else 0.0
    top = max([*(abs(v) for v in finite if v is not None), limit]) or 1.0
    legend = len(names) > 1 or bool(names and names[0])
    y0 = 22 + (16 if legend else 0)
    group = _ROW * len(names) + 6
    height = y0 + group * len(labels) + 4
    span = width - _LABEL - 60
    parts = [_open(title, width, height, len(finite), len(names))]
    if legend:
        parts.append(_legend(names, 32)[0])
    for row, label in enumerate(labels):
        y = y0 + row * group
        parts.append(
            f'<text x="{_LABEL - 6}" y="{y + _ROW * len(names) / 2 + 4:.0f}" text-anchor="end" {_FONT}>'
            f"{html.escape(str(label))}</text>"
        )
        for s, name in enumerate(names):
            value = series[name][row] if row < len(series[name]) else None
            if not _ok(value):
                continue
            assert value is not None
            w = max(1.0, span * abs(value) / top)
            over = threshold is not None and _ok(threshold) and abs(value) > abs(threshold)
            colour = "#e15759" if over else PALETTE[s % len(PALETTE)]  # past the threshold: red
            by = y + s * _ROW
            parts.append(
                f'<rect class="bar" x="{_LABEL}" y="{by + 2}" width="{w:.1f}" height="{_ROW - 5}" fill="{colour}">'
                f"<title>{html.escape(f'{label} {name}'.strip())}: {_fmt(value)} {html.escape(unit)}</title></rect>"
                f'<text x="{_LABEL + w + 4:.1f}" y="{by + _ROW - 6}" {_FONT}>{_fmt(value)} {html.escape(unit)}</text>'
            )
    if _ok(threshold):
        assert threshold is not None
        x = _LABEL + span * abs(threshold) / top
        parts.append(
            f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{height - 2}" stroke="#555" '
            f'stroke-dasharray="4 3"><title>threshold {_fmt(threshold)}</title></line>'
        )
    return "".join(parts) + "</svg>"


def shares(groups: Mapping[str, Mapping[str, float]], *, title: str = "", width: int = 420) -> str:
    """One stacked bar per group, split by share: an alias's traffic over versions (a canary).

    Example:
        >>> "v4 10%" in shares({"production": {"v3": 0.9, "v4": 0.1}}, title="aliases")
        True
    """
    if not groups:
        return _empty(title, width, "no aliases")
    keys = sorted({k for g in groups.values() for k in g})
    height = 22 + (_ROW + 4) * len(groups) + 4
    span = width - _LABEL - 10
    parts = [_open(title, width, height, sum(len(g) for g in groups.values()), len(keys))]
    for row, (name, parts_of) in enumerate(groups.items()):
        y = 22 + row * (_ROW + 4)
        total = sum(w for w in parts_of.values() if _ok(w)) or 1.0
        parts.append(f'<text x="{_LABEL - 6}" y="{y + 14}" text-anchor="end" {_FONT}>{html.escape(name)}</text>')
        x = float(_LABEL)
        for key, weight in parts_of.items():
            share = weight / total
            w = span * share
            colour = PALETTE[keys.index(key) % len(PALETTE)]
            text = f"{key} {share:.0%}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW}" fill="{colour}" '
                f'stroke="#fff"><title>{html.escape(name)}: {html.escape(text)}</title></rect>'
            )
            if w > 7 * len(text):
                parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}" {_FONT} fill="#fff">{html.escape(text)}</text>')
            x += w
    return "".join(parts) + "</svg>"


def lines(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    title: str = "",
    unit: str = "",
    width: int = 500,
    height: int = 170,
) -> str:
    """Lines over time: ``{name: [(seconds relative to now (<= 0), value), ...]}``; None breaks a line.

    Example:
        >>> svg = lines({"fraud v1": [(-4.0, 10.0), (-2.0, 12.0), (0.0, None)]}, title="requests/s")
        >>> svg.count("<polyline")
        1
    """
    points = [(t, v) for s in series.values() for t, v in s if _ok(v)]
    if not points:
        return _empty(title, width)
    legend, legend_rows = _legend(list(series), 30, width)
    left, right, top_pad, bottom = 48, 8, 26 + 15 * legend_rows, 18
    height += 15 * (legend_rows - 1)
    t_min = min(min(t for t, _ in points), -60.0)
    v_max = max(v for _, v in points if v is not None) * 1.1 or 1.0
    plot_w, plot_h = width - left - right, height - top_pad - bottom

    def xy(t: float, v: float) -> str:
        return f"{left + plot_w * (t - t_min) / -t_min:.1f},{top_pad + plot_h * (1 - v / v_max):.1f}"

    parts = [_open(title, width, height, len(points), len(series)), legend]
    for frac in (0.0, 0.5, 1.0):
        y = top_pad + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_fmt(v_max * frac)}</text>'
        )
    for t, text in ((t_min, f"{t_min / 60:.0f} min" if t_min <= -120 else f"{t_min:.0f} s"), (0.0, "now")):
        anchor = "start" if t < 0 else "end"
        parts.append(
            f'<text x="{xy(t, 0).split(",")[0]}" y="{height - 4}" text-anchor="{anchor}" {_FONT}>{text}</text>'
        )
    if unit:
        parts.append(
            f'<text x="{width - right}" y="13" text-anchor="end" {_FONT} fill="#777">{html.escape(unit)}</text>'
        )
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for t, v in values:
            if _ok(v):
                assert v is not None
                runs[-1].append(xy(t, v))
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            elif run:
                parts.append(
                    f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(run)}">'
                    f"<title>{html.escape(name)}</title></polyline>"
                )
    return "".join(parts) + "</svg>"
