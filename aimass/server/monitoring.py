"""Monitoring of served traffic: every request of a monitored model version feeds its monitor.

A served version whose package carries a reference profile (``publish(..., reference=rows)``)
gets a :class:`ServedMonitor`. On the request path it only appends the request's validated
inputs, outputs and latency to a list (and counts errors); the statistics are computed off the
request path, in batches: every ``flush_every`` requests the list is handed to a worker thread
that feeds a :class:`aimass.monitor.Monitor` for the inputs (PSI and KS per feature against the
profile) and one for the outputs (their distribution, and PSI/KS when the package also carries
``metadata["output_profile"]``); a scrape or a report flushes what is left first.

Prometheus (labels ``model``, ``version``; per feature also ``feature``):
``aimass_input_drift_psi``, ``aimass_input_drift_ks``, ``aimass_input_drift_window_rows``,
``aimass_input_drifted_features``, ``aimass_output_quantile`` (``quantile`` 0.05/0.5/0.95),
``aimass_output_mean``, ``aimass_output_drift_psi``, ``aimass_monitor_requests_total``,
``aimass_monitor_errors_total`` and ``aimass_monitor_seconds`` (the latency histogram). The
same report is JSON at ``GET /v2/models/{name}/versions/{version}/monitor``.

Example:
    >>> app = create_app(repository="library/")            # doctest: +SKIP
    >>> httpx.get(".../v2/models/fraud/versions/3/monitor").json()["drifted"]   # doctest: +SKIP
    ['x[2]']
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from aimass.monitor import LATENCY_BUCKETS, Monitor, Profile
from aimass.schema import Schema

__all__ = ["OUTPUT_PROFILE_KEY", "MonitorCollector", "ServedMonitor", "has_profile"]

OUTPUT_PROFILE_KEY = "output_profile"
QUANTILES = (0.05, 0.5, 0.95)


def has_profile(metadata: Mapping[str, Any]) -> bool:
    """Whether a package's metadata carries a reference profile of its inputs."""
    return isinstance(metadata.get("profile"), Mapping)


def _profile(found: Any) -> Profile | None:
    return Profile.from_dict(found) if isinstance(found, Mapping) else None


class ServedMonitor:
    """The monitor of one served model version: cheap recording, batched statistics.

    Example:
        >>> mon = ServedMonitor(model.schema, model.metadata, name="fraud", version="3")   # doctest: +SKIP
        >>> mon.record({"x": rows}, {"y": out}, 0.002); mon.report()["requests"]          # doctest: +SKIP
        1
    """

    def __init__(
        self,
        schema: Schema,
        metadata: Mapping[str, Any],
        *,
        name: str,
        version: str,
        window: int = 1000,
        flush_every: int = 1024,
        executor: Executor | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.inputs = Monitor(schema, _profile(metadata.get("profile")), window=window, name=name, version=version)
        out_schema = Schema(inputs=[t.model_copy() for t in schema.outputs])
        self.outputs = Monitor(
            out_schema, _profile(metadata.get(OUTPUT_PROFILE_KEY)), window=window, name=name, version=version
        )
        self.flush_every = flush_every
        self.executor = executor
        self._pending: list[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], float]] = []
        self._ingesting: list[Future[None]] = []
        self._flush_lock = threading.Lock()  # one flush at a time keeps the rings in request order

    def record(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], seconds: float) -> None:
        """One successful request (validated inputs, outputs, seconds): appended, nothing computed."""
        pending = self._pending
        pending.append((inputs, outputs, seconds))
        if len(pending) >= self.flush_every:
            self._pending = []
            if self.executor is None:
                self._ingest(pending)
            else:
                self._ingesting = [f for f in self._ingesting if not f.done()]
                self._ingesting.append(self.executor.submit(self._ingest, pending))

    def record_error(self) -> None:
        """One failed request (bad input, model error, refusal)."""
        self.inputs.record_error()

    def flush(self) -> None:
        """Feed the monitors with every request recorded so far."""
        pending, self._pending = self._pending, []
        for running in list(self._ingesting):  # batches handed to worker threads come first
            running.result()
        self._ingest(pending)

    def _ingest(self, pending: list[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], float]]) -> None:
        if not pending:
            return
        seconds = [p[2] for p in pending]
        # Every request counts (calls, latency), but the window keeps only the last `window` rows:
        # only the requests that reach into it are concatenated.
        sizes = [_count(p[0]) for p in pending]
        start, kept = len(pending), 0
        while start > 0 and kept < self.inputs.window:
            start -= 1
            kept += sizes[start]
        total = sum(sizes)
        tail = pending[start:]
        with self._flush_lock:
            for monitor, parts in ((self.inputs, [p[0] for p in tail]), (self.outputs, [p[1] for p in tail])):
                names = [t.name for t in monitor.schema.inputs]
                try:
                    merged = {n: np.concatenate([_rows(part[n]) for part in parts]) for n in names}
                except (ValueError, KeyError):
                    # Shapes differ across requests (a dynamic inner axis) or an output was not asked
                    # for: record one by one, skipping what is missing.
                    for part, sec in zip(parts, seconds[start:], strict=True):
                        if all(n in part for n in names):
                            monitor.observe_many({n: _rows(part[n]) for n in names}, [sec])
                    continue
                monitor.observe_many(merged, seconds, rows=total)

    def report(self) -> dict[str, Any]:
        """Calls, errors, latency, input drift per feature and the output distribution, as JSON-ready data."""
        self.flush()
        doc = self.inputs.report().to_dict()
        doc["outputs"] = self._output_summary()
        return doc

    def _output_summary(self) -> dict[str, Any]:
        report = self.outputs.report()
        drift = {f.feature: f for f in report.features}
        out: dict[str, Any] = {}
        for name, matrix in self.outputs.window_data().items():
            width = matrix.shape[1]
            for i in range(width):
                feature = name if width == 1 else f"{name}[{i}]"
                col = matrix[:, i]
                col = col[np.isfinite(col)]
                if col.size == 0:
                    continue
                q = np.quantile(col, QUANTILES)
                entry: dict[str, Any] = {"mean": float(col.mean())}
                entry.update({_quantile_key(k): float(v) for k, v in zip(QUANTILES, q, strict=True)})
                if feature in drift:
                    entry.update(psi=drift[feature].psi, ks=drift[feature].ks, drifted=drift[feature].drifted)
                out[feature] = entry
        return out


def _quantile_key(q: float) -> str:
    return f"p{round(q * 100):02d}"


def _count(inputs: Mapping[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and getattr(first, "ndim", 0) >= 1 else 1


def _rows(array: np.ndarray) -> np.ndarray:
    if getattr(array, "ndim", 0) >= 1:  # validated tensors nearly always are: skip numpy's dispatch
        return array
    return np.atleast_1d(np.asarray(array))


class MonitorCollector:
    """Prometheus collector over the served monitors of one server, computed at scrape time.

    Example:
        >>> MonitorCollector(repository.monitors, registry=metrics.registry)   # doctest: +SKIP
    """

    def __init__(self, monitors: Mapping[Any, ServedMonitor], *, registry: Any = None) -> None:
        self._monitors = monitors
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Any]:
        return []  # families depend on the models served; nothing to pre-declare

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "version"]
        per_feature = [*labels, "feature"]
        calls = CounterMetricFamily("aimass_monitor_requests", "Served requests seen by the monitor.", labels=labels)
        errors = CounterMetricFamily("aimass_monitor_errors", "Served requests that failed.", labels=labels)
        seconds = HistogramMetricFamily("aimass_monitor_seconds", "Served request latency (monitor).", labels=labels)
        gauge = GaugeMetricFamily
        psi = gauge("aimass_input_drift_psi", "PSI of an input feature over the window.", labels=per_feature)
        ks = gauge("aimass_input_drift_ks", "KS of an input feature over the window.", labels=per_feature)
        rows = gauge("aimass_input_drift_window_rows", "Rows in the drift window.", labels=labels)
        drifted = gauge("aimass_input_drifted_features", "Input features over a drift threshold.", labels=labels)
        out_q = gauge("aimass_output_quantile", "Output feature quantile (window).", labels=[*per_feature, "quantile"])
        out_mean = gauge("aimass_output_mean", "Mean of an output feature over the window.", labels=per_feature)
        out_psi = GaugeMetricFamily(
            "aimass_output_drift_psi", "PSI of an output feature against its output profile.", labels=per_feature
        )
        for mon in list(self._monitors.values()):
            key = [mon.name, mon.version]
            doc = mon.report()
            calls.add_metric(key, doc["requests"])
            errors.add_metric(key, doc["errors"])
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), mon.inputs.bucket_counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            seconds.add_metric(key, buckets, mon.inputs.seconds_total)
            rows.add_metric(key, doc["window_rows"])
            drifted.add_metric(key, len(doc["drifted"]))
            for f in doc["features"]:
                psi.add_metric([*key, f["feature"]], f["psi"])
                ks.add_metric([*key, f["feature"]], f["ks"])
            for feature, entry in doc["outputs"].items():
                out_mean.add_metric([*key, feature], entry["mean"])
                for q in QUANTILES:
                    out_q.add_metric([*key, feature, repr(q)], entry[_quantile_key(q)])
                if "psi" in entry:
                    out_psi.add_metric([*key, feature], entry["psi"])
        yield from (calls, errors, seconds, psi, ks, rows, drifted, out_q, out_mean, out_psi)
