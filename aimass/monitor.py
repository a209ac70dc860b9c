"""In-process monitoring of a Model: calls, errors, latency, and input drift against a reference profile.

A :class:`Profile` summarises each input feature of reference data (101 percentiles plus the
share of rows in each reference decile); the model library records one at publish
(``publish(..., reference=x_train)``). A :class:`Monitor` keeps a sliding window of the live
inputs a Model receives and scores each feature against the profile with the population
stability index (PSI) and the Kolmogorov-Smirnov statistic (KS, against the reference CDF the
percentiles describe). Rule of thumb: PSI < 0.1 no change, 0.1-0.2 moderate, > 0.2 drift.

``model.monitor`` starts monitoring a Model (predict is then timed and its inputs kept in the
window); ``model.monitor.report()`` scores the window. :class:`MonitorCollector` exposes monitors as
Prometheus metrics in a registry you pass (e.g. the server's ``Metrics.registry``).

Example:
    >>> m = Model.load("store://fraud@production")   # doctest: +SKIP
    >>> m.predict(rows)                               # doctest: +SKIP
    >>> m.monitor.report().drifted                    # doctest: +SKIP
    ['input[2]']
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import html
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import numpy as np

from aimass import charts
from aimass.dependencies import require
from aimass.errors import SchemaError
from aimass.schema import DType, Schema

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "Monitor",
    "MonitorCollector",
    "Profile",
    "drift_charts",
    "feature_matrix",
    "latency_buckets",
]

PERCENTILES = np.linspace(0.0, 100.0, 101)
MAX_FEATURES = 64  # per input; wider inputs (images, embeddings) are profiled on their first columns
PSI_DRIFT = 0.2
KS_DRIFT = 0.2
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RED = ' style="color:#b00"'
_EPS = 1e-4  # floor of bin shares in PSI, so an empty bin does not make it infinite


def feature_matrix(array: np.ndarray, max_features: int = MAX_FEATURES) -> np.ndarray:
    """Rows x features (float64) of one input: the first axis is rows, the rest is flattened.

    Example:
        >>> feature_matrix(np.zeros((3, 2, 2))).shape
        (3, 4)
    """
    a = np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = a.reshape(-1, 1)
    else:
        a = a.reshape(a.shape[0], -1)
    return a[:, :max_features].astype(np.float64, copy=False)


def _feature_names(name: str, width: int) -> list[str]:
    return [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]


@dataclasses.dataclass(frozen=True)
class FeatureProfile:
    """One feature of the reference data: percentiles 0..100, decile cut points and their row shares."""

    quantiles: list[float]
    edges: list[float]
    shares: list[float]

    def psi(self, values: np.ndarray) -> float:
        live = _shares(values, self.edges)
        ref = np.maximum(np.asarray(self.shares), _EPS)
        live = np.maximum(live, _EPS)
        return float(np.sum((live - ref) * np.log(live / ref)))

    def ks(self, values: np.ndarray) -> float:
        s = np.sort(values)
        n = s.size
        q = np.asarray(self.quantiles)
        levels = PERCENTILES / 100.0
        ref_at_live = np.interp(s, q, levels, left=0.0, right=1.0)
        upper = np.arange(1, n + 1) / n
        lower = np.arange(0, n) / n
        d_live = max(np.max(np.abs(upper - ref_at_live)), np.max(np.abs(lower - ref_at_live)))
        live_at_ref = np.searchsorted(s, q, side="right") / n  # live CDF at the reference percentiles
        d_ref = np.max(np.abs(live_at_ref - levels))
        return float(max(d_live, d_ref))


def _shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges), values, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(values.size, 1)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Reference profile of a model's inputs, feature by feature (JSON-serialisable, stored at publish).

    Example:
        >>> s = Schema(inputs=[{"name": "x", "dtype": "FP32", "shape": [-1, 2]}])
        >>> p = Profile.from_data(s, np.random.default_rng(0).normal(size=(500, 2)))
        >>> sorted(p.features)
        ['x[0]', 'x[1]']
    """

    features: dict[str, FeatureProfile]
    rows: int

    @classmethod
    def from_data(cls, schema: Schema, data: Any, *, max_features: int = MAX_FEATURES) -> Profile:
        inputs = schema.coerce(data)
        features: dict[str, FeatureProfile] = {}
        rows = 0
        for spec in schema.inputs:
            if spec.dtype is DType.BYTES:
                continue  # strings have no order to take quantiles of
            matrix = feature_matrix(inputs[spec.name], max_features)
            rows = max(rows, matrix.shape[0])
            if matrix.shape[0] == 0:
                raise SchemaError(f"reference data for input {spec.name!r} has no rows", tensor=spec.name)
            for i, fname in enumerate(_feature_names(spec.name, matrix.shape[1])):
                col = matrix[:, i]
                col = col[np.isfinite(col)]
                q = np.percentile(col, PERCENTILES) if col.size else np.zeros(101)
                edges = sorted(set(np.round(q[10:100:10], 12).tolist()))
                features[fname] = FeatureProfile(
                    quantiles=[float(v) for v in q], edges=edges, shares=_shares(col, edges).tolist()
                )
        return cls(features=features, rows=rows)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": {k: dataclasses.asdict(v) for k, v in self.features.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            rows=int(data.get("rows", 0)),
            features={k: FeatureProfile(**v) for k, v in data["features"].items()},
        )


# -- reports --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks: float
    drifted: bool


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """What a Monitor saw: calls, errors, latency, and drift per feature over the window."""

    model: str | None
    version: str | None
    requests: int
    errors: int
    rows_seen: int
    window_rows: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    features: list[FeatureDrift]
    latencies_ms: tuple[float, ...] = ()  # the window's call durations, for plots

    @property
    def drifted(self) -> list[str]:
        """Features whose PSI or KS passes the drift threshold."""
        return [f.feature for f in self.features if f.drifted]

    @property
    def max_psi(self) -> float:
        return max((f.psi for f in self.features), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("latencies_ms")
        d["drifted"] = self.drifted
        return d

    def plot(self) -> Any:
        """A matplotlib Figure: PSI and KS per feature (thresholds dashed) and the latency histogram.

        Example:
            >>> model.monitor.report().plot()   # doctest: +SKIP
        """
        plt = require("matplotlib.pyplot", feature="plotting", extra="plot", package="matplotlib")
        fig, (drift, latency) = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [f.feature for f in self.features]
        pos = np.arange(len(names))
        drift.bar(pos - 0.2, [f.psi for f in self.features], 0.4, label="PSI")
        drift.bar(pos + 0.2, [f.ks for f in self.features], 0.4, label="KS")
        drift.axhline(PSI_DRIFT, linestyle="--", color="grey", linewidth=1)
        drift.set_xticks(pos, names, rotation=45, ha="right")
        drift.set_title(f"input drift over {self.window_rows} rows")
        drift.legend()
        latency.hist(self.latencies_ms, bins=30)
        latency.set_xlabel("ms per call")
        latency.set_title(f"latency of {len(self.latencies_ms)} calls")
        fig.tight_layout()
        return fig

    def __str__(self) -> str:
        lat = (
            ""
            if self.latency_p50_ms is None
            else f", p50 {self.latency_p50_ms:.3g} ms, p99 {self.latency_p99_ms:.3g} ms"
        )
        head = f"{self.model or 'model'} v{self.version or '?'}: {self.requests} calls, {self.errors} errors{lat}"
        lines = [head, f"window {self.window_rows} rows; drifted: {', '.join(self.drifted) or 'none'}"]
        lines += [
            f"  {f.feature:<16} psi {f.psi:7.3f}  ks {f.ks:6.3f}{'  DRIFT' if f.drifted else ''}" for f in self.features
        ]
        return "\n".join(lines)

    def svg(self) -> list[str]:
        """PSI and KS per feature as SVG bar charts, drift thresholds dashed (what the dashboard shows).

        Example:
            >>> model.monitor.report().svg()[0].startswith("<svg")   # doctest: +SKIP
            True
        """
        return drift_charts({f.feature: (f.psi, f.ks) for f in self.features}, self.window_rows)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr{_RED if f.drifted else ''}><td>{html.escape(f.feature)}</td>"
            f"<td>{f.psi:.3f}</td><td>{f.ks:.3f}</td><td>{'yes' if f.drifted else ''}</td></tr>"
            for f in self.features
        )
        lat = (
            ""
            if self.latency_p50_ms is None
            else f" &middot; p50 {self.latency_p50_ms:.3g} ms &middot; p99 {self.latency_p99_ms:.3g} ms"
        )
        return (
            f"<div><b>Monitor</b> {html.escape(self.model or '')} v{html.escape(self.version or '?')} &middot; "
            f"{self.requests} calls &middot; {self.errors} errors{lat} &middot; window {self.window_rows} rows"
            f"<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>drift</th></tr>{rows}</table>"
            f"{''.join(self.svg()) if self.features else ''}</div>"
        )


def drift_charts(features: Mapping[str, tuple[float, float]], window_rows: int) -> list[str]:
    """SVG bars of PSI and KS per feature (``{feature: (psi, ks)}``), with the default drift thresholds.

    Example:
        >>> len(drift_charts({"x[0]": (0.05, 0.1)}, 500))
        2
    """
    return [
        charts.bars({k: v[0] for k, v in features.items()}, title=f"PSI over {window_rows} rows", threshold=PSI_DRIFT),
        charts.bars({k: v[1] for k, v in features.items()}, title=f"KS over {window_rows} rows", threshold=KS_DRIFT),
    ]


# -- the monitor ----------------------------------------------------------------------------------


class Monitor:
    """Counts calls and errors, times them, and keeps the last ``window`` rows of every input.

    Example:
        >>> mon = Monitor(schema, profile, window=1000)      # doctest: +SKIP
        >>> mon.observe({"x": rows}, seconds=0.002)          # doctest: +SKIP
        >>> mon.report().max_psi                             # doctest: +SKIP
    """

    def __init__(
        self,
        schema: Schema,
        profile: Profile | None = None,
        *,
        window: int = 1000,
        name: str | None = None,
        version: str | None = None,
        psi_threshold: float = PSI_DRIFT,
        ks_threshold: float = KS_DRIFT,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.schema = schema
        self.profile = profile
        self.window = window
        self.name = name
        self.version = version
        self.psi_threshold = psi_threshold
        self.ks_threshold = ks_threshold
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.rows_seen = 0
        self.seconds_total = 0.0
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latencies = np.zeros(window)  # ring of the last `window` call durations
        self._ring: dict[str, np.ndarray] = {}
        self._pos = 0
        self._filled = 0

    def set_reference(self, data: Any) -> Profile:
        """Profile ``data`` now and compare live traffic with it from here on."""
        self.profile = Profile.from_data(self.schema, data)
        return self.profile

    def observe(self, inputs: Mapping[str, np.ndarray], seconds: float) -> None:
        """Record one successful call on validated ``inputs`` that took ``seconds``."""
        mats = {t.name: feature_matrix(inputs[t.name]) for t in self.schema.inputs if t.dtype is not DType.BYTES}
        rows = max((m.shape[0] for m in mats.values()), default=0)
        with self._lock:
            self.requests += 1
            self.rows_seen += rows
            self.seconds_total += seconds
            self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latencies[(self.requests - 1) % self.window] = seconds
            self._append(mats, rows)

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def observe_many(self, inputs: Mapping[str, np.ndarray], seconds: Any, rows: int | None = None) -> None:
        """Record ``len(seconds)`` successful calls at once, their validated inputs concatenated along rows.

        What a server does with requests it collected: one ring update for many calls. ``rows`` is
        the calls' total row count when ``inputs`` hold only the last of them (the window keeps no more).

        Example:
            >>> mon.observe_many({"x": np.vstack([a, b])}, seconds=[0.002, 0.003])   # doctest: +SKIP
        """
        lat = np.asarray(seconds, dtype=np.float64).reshape(-1)
        n = lat.size
        if n == 0:
            return
        mats = {t.name: feature_matrix(inputs[t.name]) for t in self.schema.inputs if t.dtype is not DType.BYTES}
        kept = max((m.shape[0] for m in mats.values()), default=0)
        counts = np.bincount(np.searchsorted(LATENCY_BUCKETS, lat, side="left"), minlength=len(LATENCY_BUCKETS) + 1)
        keep = lat[-self.window :]
        with self._lock:
            first = self.requests + n - keep.size  # call number of the first latency kept
            self.requests += n
            self.rows_seen += kept if rows is None else rows
            self.seconds_total += float(lat.sum())
            self.bucket_counts = [a + int(b) for a, b in zip(self.bucket_counts, counts, strict=True)]
            self._latencies[(first + np.arange(keep.size)) % self.window] = keep
            self._append(mats, kept)

    def _append(self, mats: dict[str, np.ndarray], rows: int) -> None:
        if rows == 0:
            return
        take = min(rows, self.window)
        idx = (self._pos + np.arange(take)) % self.window
        for name, m in mats.items():
            ring = self._ring.get(name)
            if ring is None or ring.shape[1] != m.shape[1]:
                ring = self._ring[name] = np.zeros((self.window, m.shape[1]))
            ring[idx] = m[-take:] if m.shape[0] == rows else np.resize(m, (take, m.shape[1]))
        self._pos = (self._pos + take) % self.window
        self._filled = min(self._filled + take, self.window)

    def window_data(self) -> dict[str, np.ndarray]:
        """The rows currently in the window, per input (rows x features), oldest first."""
        with self._lock:
            order = (self._pos - self._filled + np.arange(self._filled)) % self.window
            return {k: v[order].copy() for k, v in self._ring.items()}

    def report(self) -> DriftReport:
        """Score the window against the profile (no features when there is no profile or no traffic)."""
        data = self.window_data()
        with self._lock:
            n_lat = min(self.requests, self.window)
            lat = self._latencies[:n_lat].copy()
            requests, errors, rows_seen = self.requests, self.errors, self.rows_seen
        features = []
        if self.profile is not None and data:
            for name, matrix in data.items():
                for i, fname in enumerate(_feature_names(name, matrix.shape[1])):
                    ref = self.profile.features.get(fname)
                    col = matrix[:, i]
                    col = col[np.isfinite(col)]
                    if ref is None or col.size == 0:
                        continue
                    psi, ks = ref.psi(col), ref.ks(col)
                    drifted = psi > self.psi_threshold or ks > self.ks_threshold
                    features.append(FeatureDrift(fname, psi, ks, drifted))
        p50 = float(np.percentile(lat, 50) * 1e3) if lat.size else None
        p99 = float(np.percentile(lat, 99) * 1e3) if lat.size else None
        window_rows = next(iter(data.values())).shape[0] if data else 0
        return DriftReport(
            self.name,
            self.version,
            requests,
            errors,
            rows_seen,
            window_rows,
            p50,
            p99,
            features,
            tuple(float(v) for v in lat * 1e3),
        )

    def wrap(
        self, coerce: Callable[[Any], dict[str, np.ndarray]], run: Callable[..., dict[str, np.ndarray]]
    ) -> tuple[Callable[[Any], dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]:
        """Monitored versions of a Model's validation and backend call (what ``model.monitor`` installs)."""

        def checked(data: Any) -> dict[str, np.ndarray]:
            try:
                return coerce(data)
            except Exception:
                self.record_error()
                raise

        def timed(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with self._timing(inputs):
                return run(inputs)

        return checked, timed

    def wrap_async(
        self, arun: Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
    ) -> Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]:
        """A monitored ``arun`` (a backend's native async call: remote models' ``apredict``), timed like ``run``."""

        async def timed(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with self._timing(inputs):
                return await arun(inputs)

        return timed

    @contextlib.contextmanager
    def _timing(self, inputs: dict[str, np.ndarray]) -> Iterator[None]:
        """Count an error, or observe ``inputs`` with the seconds the block took."""
        start = time.perf_counter()
        try:
            yield
        except Exception:
            self.record_error()
            raise
        self.observe(inputs, time.perf_counter() - start)


def for_model(model: Any, *, window: int = 1000) -> Monitor:
    """A Monitor for a Model, with the profile and the name/version the library recorded, if any."""
    meta = model.metadata
    profile = Profile.from_dict(meta["profile"]) if isinstance(meta.get("profile"), Mapping) else None
    store = meta.get("store") or {}
    version = store.get("version")
    return Monitor(
        model.schema, profile, window=window, name=model.name, version=None if version is None else str(version)
    )


# -- Prometheus -----------------------------------------------------------------------------------


def latency_buckets(bucket_counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket latency counts as Prometheus histogram buckets: ``(upper bound, cumulative count)``.

    The one rule both collectors use (this module's and the server's, :mod:`aimass.server.monitoring`).

    Example:
        >>> latency_buckets([1] * (len(LATENCY_BUCKETS) + 1))[-1]
        ('+Inf', 15)
    """
    cumulative, buckets = 0, []
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), bucket_counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return buckets


class MonitorCollector:
    """A Prometheus collector over monitors, computed at scrape time; register it in any registry.

    Metrics (labels ``model``, ``version``; drift also ``feature``): ``aimass_predict_calls_total``,
    ``aimass_predict_errors_total``, ``aimass_predict_seconds`` (histogram),
    ``aimass_input_drift_psi``, ``aimass_input_drift_ks``, ``aimass_input_drift_window_rows``.
    The names do not clash with the server's ``aimass_requests_total`` family (:mod:`aimass.server.metrics`),
    so both can share one registry.

    Example:
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> reg = CollectorRegistry()
        >>> collector = MonitorCollector(registry=reg)
        >>> collector.add(model.monitor)                     # doctest: +SKIP
        >>> b"aimass_input_drift_psi" in generate_latest(reg)  # doctest: +SKIP
        True
    """

    def __init__(self, monitors: list[Monitor] | None = None, *, registry: Any = None) -> None:
        self._monitors: list[Monitor] = list(monitors or [])
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def add(self, monitor: Monitor) -> None:
        with self._lock:
            if all(m is not monitor for m in self._monitors):
                self._monitors.append(monitor)

    def describe(self) -> list[Any]:
        return []  # metric families depend on the monitors added later; nothing to pre-declare

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "version"]
        calls = CounterMetricFamily("aimass_predict_calls", "Model.predict calls seen by the monitor.", labels=labels)
        errors = CounterMetricFamily("aimass_predict_errors", "Model.predict calls that raised.", labels=labels)
        seconds = HistogramMetricFamily("aimass_predict_seconds", "Model.predict backend time.", labels=labels)
        psi = GaugeMetricFamily(
            "aimass_input_drift_psi", "PSI of an input feature over the window.", labels=[*labels, "feature"]
        )
        ks = GaugeMetricFamily(
            "aimass_input_drift_ks", "KS statistic of an input feature over the window.", labels=[*labels, "feature"]
        )
        rows = GaugeMetricFamily("aimass_input_drift_window_rows", "Rows in the drift window.", labels=labels)
        with self._lock:
            monitors = list(self._monitors)
        for mon in monitors:
            key = [mon.name or "", mon.version or ""]
            report = mon.report()
            calls.add_metric(key, report.requests)
            errors.add_metric(key, report.errors)
            seconds.add_metric(key, latency_buckets(mon.bucket_counts), mon.seconds_total)
            rows.add_metric(key, report.window_rows)
            for f in report.features:
                psi.add_metric([*key, f.feature], f.psi)
                ks.add_metric([*key, f.feature], f.ks)
        yield from (calls, errors, seconds, psi, ks, rows)
