"""What the library reports: one version (:class:`VersionInfo`), many (:class:`Listing`), as text, HTML or JSON.

Example:
    >>> print(Listing([{"name": "fraud", "version": 1, "aliases": {"production": 1.0, "canary": 0.1}}]))
    name   version  aliases
    fraud  1        production,canary(10%)
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Iterator, Mapping
from typing import Any

from aimass import charts
from aimass.measure import human_size

__all__ = ["Listing", "VersionInfo"]


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One published version: its manifest facts, the metrics and tags recorded with it, its aliases."""

    name: str
    version: int
    created: str
    backend: str
    framework: str
    size: int
    schema: str
    metrics: dict[str, float]
    tags: dict[str, str]
    aliases: dict[str, float]  # alias -> share of its traffic
    has_profile: bool
    problem: str | None = None  # why part of the row is missing (a malformed aliases.json), else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _repr_html_(self) -> str:
        return Listing([self.to_dict()], detail=True)._repr_html_()


_COLUMNS = ("name", "version", "aliases", "backend", "size", "created", "metrics")


def _cell(key: str, value: Any) -> str:
    if key == "aliases" and isinstance(value, Mapping):
        return ",".join(a if w >= 1 else f"{a}({w:.0%})" for a, w in value.items())
    if key == "metrics" and isinstance(value, Mapping):
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    if key == "tags" and isinstance(value, Mapping):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if key == "size" and isinstance(value, int):
        return human_size(value)
    if key == "created" and isinstance(value, str):
        return value[:19].replace("T", " ")
    return "" if value is None else str(value)


class Listing:
    """Rows of the library (one per version), shown as a text table, an HTML table, or JSON.

    Example:
        >>> print(Listing([{"name": "fraud", "version": 1, "aliases": {"production": 1.0}}]))
        name   version  aliases
        fraud  1        production
    """

    def __init__(self, rows: list[dict[str, Any]], *, detail: bool = False) -> None:
        self.rows = rows
        self.detail = detail

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def _columns(self) -> list[str]:
        keys = {k for row in self.rows for k in row}
        extra = ("tags", "framework") if self.detail else ()
        problem = ("problem",) if any(row.get("problem") for row in self.rows) else ()
        return [c for c in (*_COLUMNS, *extra, *problem) if c in keys]

    def __str__(self) -> str:
        cols = self._columns()
        table = [cols] + [[_cell(c, row.get(c)) for c in cols] for row in self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=2, default=str)

    def svg(self) -> list[str]:
        """SVG charts of the rows: package size per version, and each recorded metric per version.

        Example:
            >>> Listing([{"name": "fraud", "version": 1, "size": 2048, "metrics": {"accuracy": 0.9}}]).svg()[1][:4]
            '<svg'
        """
        labels = [f"{r.get('name', '')} v{r.get('version', '')}" for r in self.rows]
        out = []
        if any(isinstance(r.get("size"), int) for r in self.rows):
            sizes = [r["size"] / 1024 if isinstance(r.get("size"), int) else None for r in self.rows]
            out.append(charts.grouped_bars(labels, {"": sizes}, title="size", unit="KiB"))
        names = list(dict.fromkeys(k for r in self.rows for k in (r.get("metrics") or {})))
        for metric in names[:6]:
            values = [(r.get("metrics") or {}).get(metric) for r in self.rows]
            out.append(charts.grouped_bars(labels, {"": values}, title=metric))
        return out

    def _repr_html_(self) -> str:
        cols = self._columns()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(c, row.get(c)))}</td>" for c in cols) + "</tr>"
            for row in self.rows
        )
        return f"<table><tr>{head}</tr>{body}</table>{''.join(self.svg())}"
