"""What the dashboard lists: a model library's versions and the models a server holds, as JSON documents.

A :class:`Catalog` reads a :class:`~aimass.store.Store` (local or ``s3://``) and/or a server's
:class:`~aimass.server.repository.Repository`. Library versions carry what was recorded at
publish (metrics, evaluation, gates, aliases, the compression/conversion report); models a
server was given directly carry what their ``Model`` holds. Charts come as SVG text from the same
methods notebooks use (:meth:`Listing.svg`, :meth:`Report.svg`, :meth:`Evaluation.svg`).

Example:
    >>> from aimass.store import Store
    >>> Catalog(store=Store("models/")).models()["models"][0]["name"]   # doctest: +SKIP
    'fraud'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aimass import charts
from aimass.compress.report import Report
from aimass.errors import ModelNotFound, StoreError
from aimass.evaluate import Evaluation, check_gate
from aimass.monitor import drift_charts
from aimass.package import MANIFEST, Manifest, parse_manifest
from aimass.redaction import reason
from aimass.server.versions import version_key
from aimass.store import Listing, Store
from aimass.store.library import METADATA_KEY

if TYPE_CHECKING:
    from aimass.server.repository import Repository, ServedModel

__all__ = ["Catalog"]


# A model whose files cannot be read: listed with its error and nothing else.
_EMPTY: dict[str, Any] = {"versions": [], "latest": None, "backend": None, "aliases": {}, "served": []}


def _why(error: BaseException) -> str:
    """What the dashboard shows for one model's failure: short, without server paths or secrets."""
    return reason(error)


def _report(raw: Any) -> Report | None:
    if isinstance(raw, Report):
        return raw
    if isinstance(raw, Mapping):
        try:
            return Report.model_validate(raw)
        except ValueError:
            return None
    return None


class Catalog:
    """The models of a library and/or a server, as plain JSON-ready dicts (read-only).

    Example:
        >>> Catalog(store=Store("models/")).version("fraud", "2")["backend"]   # doctest: +SKIP
        'onnx'
    """

    def __init__(self, store: Store | None = None, repository: Repository | None = None) -> None:
        self.store = store
        self.repository = repository

    # -- sources --------------------------------------------------------------------------------

    def _library_names(self) -> list[str]:
        return self.store.names() if self.store is not None else []

    def _served(self) -> dict[str, dict[str, ServedModel]]:
        out: dict[str, dict[str, ServedModel]] = {}
        if self.repository is not None:
            for served in self.repository.loaded():
                out.setdefault(served.name, {})[served.version] = served
        return out

    def _manifest(self, name: str, version: int) -> Manifest:
        assert self.store is not None
        raw = self.store.driver.read(name, f"{version}/{MANIFEST}")
        if raw is None:
            raise ModelNotFound(f"model {name!r} has no version {version}")
        return parse_manifest(raw, f"{name}/{version}")

    # -- rows -----------------------------------------------------------------------------------

    def _library_rows(self, name: str) -> list[dict[str, Any]]:
        if self.store is None or name not in self._library_names():
            return []
        return [{**self.store.info(name, v).to_dict(), "version": str(v)} for v in self.store.versions(name)]

    @staticmethod
    def _served_row(served: ServedModel) -> dict[str, Any]:
        model = served.model
        meta = model.metadata.get(METADATA_KEY) or {}
        return {
            "name": served.name,
            "version": served.version,
            "created": None,
            "backend": model.backend_name,
            "framework": getattr(model.backend, "framework", ""),
            "size": None,
            "schema": str(model.schema),
            "metrics": dict(meta.get("metrics") or {}),
            "tags": dict(meta.get("tags") or {}),
            "aliases": {},
            "has_profile": "profile" in model.metadata,
        }

    def _rows(self, name: str) -> list[dict[str, Any]]:
        rows = {r["version"]: r for r in self._library_rows(name)}
        served = self._served().get(name, {})
        for version, s in served.items():
            rows.setdefault(version, self._served_row(s))
        for version, row in rows.items():
            row["served"] = version in served
        return [rows[v] for v in sorted(rows, key=version_key)]

    # -- documents ------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """Every model: versions, latest, aliases with weights, backend, which versions are served."""
        names = sorted({*self._library_names(), *self._served()})
        models, all_rows = [], []
        for name in names:
            try:
                rows = self._rows(name)
            except Exception as e:  # one model's broken files: that model says why, the others are listed
                models.append({**_EMPTY, "name": name, "error": _why(e)})
                continue
            all_rows.extend(rows)
            latest = rows[-1]
            aliases, problem = self._aliases(name)
            entry: dict[str, Any] = {
                "name": name,
                "versions": [r["version"] for r in rows],
                "latest": latest["version"],
                "backend": latest["backend"],
                "aliases": aliases,
                "served": [r["version"] for r in rows if r["served"]],
            }
            if problem:
                entry["error"] = problem
            models.append(entry)
        return {"models": models, "charts": Listing(all_rows).svg() if all_rows else []}

    def _aliases(self, name: str) -> tuple[dict[str, dict[str, float]], str | None]:
        """Aliases with their traffic shares, and why there are none when ``aliases.json`` is malformed."""
        if self.store is None or name not in self._library_names():
            return {}, None
        try:
            found = self.store.aliases(name)
        except StoreError as e:
            return {}, f"aliases unavailable: {_why(e)}"
        out = {}
        for alias, targets in found.items():
            total = sum(targets.values()) or 1.0
            out[alias] = {str(v): w / total for v, w in sorted(targets.items())}
        return out, None

    def model(self, name: str) -> dict[str, Any]:
        """One model: its versions (rows), aliases (canary shares as a chart), gates, metric charts."""
        rows = self._rows(name)
        if not rows:
            raise ModelNotFound(f"unknown model {name!r}")
        aliases, problem = self._aliases(name)
        gates = self._gates(name) if problem is None else {}  # gates live in the same file
        chart_aliases = {a: {f"v{v}": w for v, w in t.items()} for a, t in aliases.items()}
        doc = {
            "name": name,
            "versions": rows,
            "aliases": aliases,
            "gates": gates,
            "charts": [charts.shares(chart_aliases, title="traffic per alias"), *Listing(rows).svg()],
        }
        if problem:
            doc["error"] = problem
        return doc

    def _in_library(self, name: str) -> bool:
        return self.store is not None and name in self._library_names()

    def _gates(self, name: str) -> dict[str, dict[str, str]]:
        return self.store.gates(name) if self.store is not None and self._in_library(name) else {}

    def version(self, name: str, version: str) -> dict[str, Any]:
        """One version: schema, backend, size, created, metrics and evaluation, gates, report, profile."""
        rows = {r["version"]: r for r in self._rows(name)}
        if version not in rows:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {list(rows)}")
        doc = dict(rows[version])
        report: Report | None = None
        evaluation: dict[str, Any] | None = None
        if (
            self.store is not None
            and self._in_library(name)
            and version.isdigit()
            and int(version) in self.store.versions(name)
        ):
            manifest = self._manifest(name, int(version))
            schema = manifest.model_schema
            report = _report(manifest.report)
            evaluation = (manifest.metadata.get(METADATA_KEY) or {}).get("evaluation")
            doc["profile_rows"] = (manifest.metadata.get("profile") or {}).get("rows")
        else:
            served = self._served()[name][version]
            schema = served.model.schema
            report = _report(served.model.report)
        doc["schema"] = schema.model_dump(mode="json")
        metrics = doc["metrics"]
        doc["evaluation"] = evaluation
        gates = self._gates(name) if not doc.get("problem") else {}  # a malformed aliases.json holds the gates
        doc["gates"] = {alias: {"gate": g, "failures": check_gate(metrics, g)} for alias, g in gates.items()}
        doc["report"] = None if report is None else {"text": report.text(), "charts": report.svg()}
        metric_chart = (
            Evaluation(task=str(evaluation.get("task", "")), rows=int(evaluation.get("rows", 0)), metrics=metrics).svg()
            if isinstance(evaluation, Mapping) and metrics
            else charts.bars(metrics, title="recorded metrics")
        )
        doc["charts"] = [metric_chart] if metrics else []
        return doc

    def drift(self) -> dict[str, Any]:
        """PSI and KS per input feature of every monitored served version (:mod:`aimass.server.monitoring`)."""
        out = []
        monitors = self.repository.monitors if self.repository is not None else {}
        for name, version in sorted(monitors):
            assert self.repository is not None
            report = self.repository.monitor_report(name, version)
            features = {f["feature"]: (float(f["psi"]), float(f["ks"])) for f in report.get("features", [])}
            rows = int(report.get("window_rows") or 0)
            out.append(
                {
                    "model": name,
                    "version": version,
                    "requests": report.get("requests"),
                    "window_rows": rows,
                    "drifted": report.get("drifted", []),
                    "features": [{"feature": f, "psi": p, "ks": k} for f, (p, k) in features.items()],
                    "charts": drift_charts(features, rows) if features else [],
                }
            )
        return {"models": out}
