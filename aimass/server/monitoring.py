"""Monitoring of served traffic: every request of a monitored model version feeds its monitor.

A served version whose package carries a reference profile (``publish(..., reference=rows)``)
gets a :class:`ServedMonitor`. On the request path it only appends the request's latency to a
list and its validated inputs and outputs to a deque of the last ``window`` requests (wide or big
tensors cut to what the window uses), and counts errors. The statistics are computed when read,
on a scrape of ``/metrics`` or a report (and every ``fold_every`` requests, to keep the list
short): a :class:`aimass.monitor.Monitor` for the inputs (PSI and KS per feature against the
profile) and one for the outputs (their distribution, and PSI/KS when the package also carries
``metadata["output_profile"]``). Requests between two reads all count (calls, latency); the drift
window holds the last rows, as a :class:`~aimass.monitor.Monitor` does.

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
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from aimass.monitor import MAX_FEATURES, Monitor, Profile, latency_buckets
from aimass.schema import Schema

__all__ = ["OUTPUT_PROFILE_KEY", "ServedMonitor", "ServedMonitorCollector", "has_profile"]

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
        fold_every: int = 65536,
    ) -> None:
        self.name = name
        self.version = version
        self.inputs = Monitor(schema, _profile(metadata.get("profile")), window=window, name=name, version=version)
        out_schema = Schema(inputs=[t.model_copy() for t in schema.outputs])
        self.outputs = Monitor(
            out_schema, _profile(metadata.get(OUTPUT_PROFILE_KEY)), window=window, name=name, version=version
        )
        self.fold_every = fold_every
        # Since the last fold: every request's latency and rows, and the last `window` requests'
        # tensors (the drift window keeps no more rows than that).
        self._seconds: list[float] = []
        self._rows = 0
        self._recent: deque[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]] = deque(maxlen=window)
        self._fold_lock = threading.Lock()  # one fold at a time keeps the rings in request order

    def record(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], seconds: float) -> None:
        """One successful request (validated inputs, outputs, seconds): kept, nothing computed."""
        self._seconds.append(seconds)
        rows = _count(inputs)
        self._rows += rows
        if rows > self.inputs.window or _wide(inputs):
            inputs, outputs = _narrow(inputs, self.inputs.window), _narrow(outputs, self.inputs.window)
        self._recent.append((inputs, outputs))
        if len(self._seconds) >= self.fold_every:
            self.flush()  # a few ms every fold_every requests: counts and latencies stay exact

    def record_error(self) -> None:
        """One failed request (bad input, model error, refusal)."""
        self.inputs.record_error()

    def flush(self) -> None:
        """Feed the monitors: counts and latencies of every request since the last flush, tensors of the last ones."""
        with self._fold_lock:
            seconds, self._seconds = self._seconds, []
            rows, self._rows = self._rows, 0
            recent, self._recent = self._recent, deque(maxlen=self.inputs.window)
            if not seconds:
                return
            for monitor, parts in ((self.inputs, [p[0] for p in recent]), (self.outputs, [p[1] for p in recent])):
                names = [t.name for t in monitor.schema.inputs]
                try:
                    merged = {n: np.concatenate([_rows(part[n]) for part in parts]) for n in names}
                except (ValueError, KeyError):
                    # Shapes differ across requests (a dynamic inner axis) or an output was not asked
                    # for: the calls count, and the window takes the requests that fit the first one.
                    usable = [p for p in parts if all(n in p for n in names)]
                    merged = {n: _rows(usable[-1][n])[:0] for n in names} if usable else {}
                    for part in usable:
                        if all(_rows(part[n]).shape[1:] == merged[n].shape[1:] for n in names):
                            merged = {n: np.concatenate([merged[n], _rows(part[n])]) for n in names}
                    if not merged:
                        merged = {n: np.zeros((0, 1)) for n in names}
                monitor.observe_many(merged, seconds, rows=rows)

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


def _wide(tensors: Mapping[str, np.ndarray]) -> bool:
    for a in tensors.values():
        shape: tuple[int, ...] = getattr(a, "shape", ())
        if len(shape) > 1 and a.size > MAX_FEATURES * shape[0]:
            return True
    return False


def _narrow(tensors: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Copies of what the window can use (the last ``rows`` rows, the first features): big requests
    must not stay alive in the monitor whole."""
    out = {}
    for name, a in tensors.items():
        tail = np.asarray(a)[-rows:]
        out[name] = tail.reshape(tail.shape[0], -1)[:, :MAX_FEATURES].copy() if tail.ndim > 1 else tail.copy()
    return out


def _rows(array: np.ndarray) -> np.ndarray:
    if getattr(array, "ndim", 0) >= 1:  # validated tensors nearly always are: skip numpy's dispatch
        return array
    return np.atleast_1d(np.asarray(array))


class ServedMonitorCollector:
    """Prometheus collector over the served monitors of one server, computed at scrape time.

    Its families (``aimass_monitor_*``, output quantiles) differ from those of
    :class:`aimass.monitor.MonitorCollector` (``Model.monitor`` in a process): two classes, two names.

    Example:
        >>> ServedMonitorCollector(repository.monitors, registry=metrics.registry)   # doctest: +SKIP
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
            seconds.add_metric(key, latency_buckets(mon.inputs.bucket_counts), mon.inputs.seconds_total)
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
