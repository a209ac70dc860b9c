"""The live service over the last minutes: a ring buffer of samples of the server's Prometheus metrics.

:class:`LiveSampler` reads the server's request metrics (:mod:`aimass.server.metrics`: requests,
failures, request/queue/compute latency histograms, rows per model call, in flight) every
``interval`` seconds and keeps the last ``capacity`` samples. Requests pay nothing for it: the
counters exist already, and the sampler only reads them, from a task on the event loop. It reads
only those families (a restricted view of the registry), so collectors that compute at scrape
time (drift monitors) are not run by it. Rates, p50/p99
(interpolated in histogram buckets, as Prometheus' ``histogram_quantile`` does), queue and compute
means and batch sizes come from the difference of consecutive samples.

Example:
    >>> from aimass.server.metrics import Metrics
    >>> metrics = Metrics()
    >>> live = LiveSampler(metrics.registry, interval=2.0)
    >>> live.sample(); metrics.model("fraud", "1").requests.inc(); live.sample()
    >>> live.series()["models"][0]["model"]
    'fraud'
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.multiprocess import MultiProcessCollector

from aimass import charts
from aimass.server.metrics import multiprocess_dir

__all__ = ["SAMPLES", "LiveSampler", "quantile"]

Key = tuple[str, str]  # (model, version)
# The samples read from the server's registry (aimass.server.metrics): nothing else is collected.
SAMPLES = (
    "aimass_requests_total",
    "aimass_request_failures_total",
    "aimass_request_seconds_bucket",
    "aimass_queue_seconds_sum",
    "aimass_queue_seconds_count",
    "aimass_compute_seconds_sum",
    "aimass_compute_seconds_count",
    "aimass_batch_size_sum",
    "aimass_batch_size_count",
    "aimass_requests_in_flight",
)


_WANTED = frozenset(SAMPLES)


@dataclasses.dataclass
class _Totals:
    """Cumulative values of one model version at one instant."""

    requests: float = 0.0
    failures: float = 0.0
    latency: dict[float, float] = dataclasses.field(default_factory=dict)  # bucket upper bound -> cumulative count
    queue_sum: float = 0.0
    queue_count: float = 0.0
    compute_sum: float = 0.0
    compute_count: float = 0.0
    batch_sum: float = 0.0
    batch_count: float = 0.0
    in_flight: float = 0.0


@dataclasses.dataclass(frozen=True)
class _Sample:
    """One interval between two reads: when it ended, and per model version what happened in it."""

    t: float
    points: dict[Key, dict[str, float | None]]


def _point(a: _Totals, b: _Totals, dt: float) -> dict[str, float | None]:
    delta = {le: b.latency.get(le, 0.0) - a.latency.get(le, 0.0) for le in b.latency}
    return {
        "requests_per_s": (b.requests - a.requests) / dt,
        "errors_per_s": (b.failures - a.failures) / dt,
        "p50_ms": _ms(quantile(0.5, delta)),
        "p99_ms": _ms(quantile(0.99, delta)),
        "queue_ms": _ratio(b.queue_sum - a.queue_sum, b.queue_count - a.queue_count, 1e3),
        "compute_ms": _ratio(b.compute_sum - a.compute_sum, b.compute_count - a.compute_count, 1e3),
        "batch_rows": _ratio(b.batch_sum - a.batch_sum, b.batch_count - a.batch_count),
    }


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a histogram given as ``{upper bound: cumulative count}`` (None when empty).

    Linear within a bucket, like Prometheus' ``histogram_quantile``; in the ``+Inf`` bucket, the
    largest finite bound.

    Example:
        >>> round(quantile(0.5, {0.001: 0.0, 0.01: 10.0, float("inf"): 10.0}), 6)
        0.0055
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _read(source: Any) -> dict[Key, _Totals]:
    totals: dict[Key, _Totals] = {}
    for family in source.collect():
        for s in family.samples:
            if s.name not in _WANTED:
                continue
            key = (s.labels.get("model", ""), s.labels.get("version", ""))
            t = totals.get(key)
            if t is None:
                t = totals[key] = _Totals()
            sample = s.name
            if sample == "aimass_requests_total":
                t.requests = s.value
            elif sample == "aimass_request_failures_total":
                t.failures += s.value
            elif sample == "aimass_request_seconds_bucket":
                t.latency[float(s.labels["le"])] = s.value
            elif sample == "aimass_queue_seconds_sum":
                t.queue_sum = s.value
            elif sample == "aimass_queue_seconds_count":
                t.queue_count = s.value
            elif sample == "aimass_compute_seconds_sum":
                t.compute_sum = s.value
            elif sample == "aimass_compute_seconds_count":
                t.compute_count = s.value
            elif sample == "aimass_batch_size_sum":
                t.batch_sum = s.value
            elif sample == "aimass_batch_size_count":
                t.batch_count = s.value
            elif sample == "aimass_requests_in_flight":
                t.in_flight = s.value
    return totals


_EMPTY = _Totals()


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return scale * num / den if den > 0 else None


class LiveSampler:
    """Samples a Prometheus registry every ``interval`` seconds into a ring of ``capacity`` samples.

    Example:
        >>> live = LiveSampler(app.metrics.registry, interval=2.0, capacity=450)   # 15 minutes   # doctest: +SKIP
        >>> live.start()                                                          # on the event loop  # doctest: +SKIP
    """

    def __init__(
        self,
        registry: Any,
        *,
        interval: float = 2.0,
        idle_interval: float = 10.0,
        capacity: int = 450,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or idle_interval < interval or capacity < 2:
            raise ValueError(
                f"need 0 < interval <= idle_interval and capacity >= 2, got {interval}, {idle_interval}, {capacity}"
            )
        self.registry = registry
        directory = multiprocess_dir()
        # Worker processes (aimass serve --workers) share their values in files: read every worker's.
        self._source: Any = (
            registry.restricted_registry(SAMPLES) if directory is None else MultiProcessCollector(None, path=directory)
        )
        self.interval = interval
        self.idle_interval = idle_interval
        self.clock = clock
        self._ring: collections.deque[_Sample] = collections.deque(maxlen=capacity)
        self._last: tuple[float, dict[Key, _Totals]] | None = None
        self._viewed = -math.inf  # when a viewer last asked
        self._lock = threading.Lock()  # periodic samples (event loop) and viewers (worker threads)
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._ring)

    def sample(self) -> None:
        """Read the request metrics once; what changed since the last read becomes one interval of the ring."""
        with self._lock:
            now, totals = self.clock(), _read(self._source)
            if self._last is not None and now > self._last[0]:
                before, dt = self._last[1], now - self._last[0]
                points = {k: _point(before.get(k, _EMPTY), t, dt) for k, t in totals.items()}
                self._ring.append(_Sample(now, points))
            self._last = (now, totals)

    def start(self) -> None:
        """Sample from a task on the running event loop (idempotent).

        Every ``interval`` seconds while someone looked in the last five minutes, every
        ``idle_interval`` seconds otherwise: with nobody looking the history stays, coarser.
        """
        if self._task is None or self._task.done():
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="aimass-dashboard-sampler")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            watched = self.clock() - self._viewed < 300.0
            await asyncio.sleep(self.interval if watched else self.idle_interval)
            self.sample()

    def series(self, window: float = 300.0) -> dict[str, Any]:
        """Per model version over the last ``window`` seconds: points, totals, and the charts.

        Each point covers one interval between samples: ``t`` (seconds before now, <= 0), requests
        and errors per second, p50/p99 latency (ms), mean queue wait and compute time (ms), mean
        rows per model call. Safe to call from a worker thread.
        """
        self._viewed = self.clock()
        last = self._last
        if last is None or self.clock() - last[0] >= min(0.5, self.interval):
            self.sample()  # a viewer sees the last seconds too, not only the last periodic sample
        with self._lock:
            now, totals = self._last if self._last is not None else (self.clock(), {})
            samples = [s for s in self._ring if now - s.t <= window]
        models: list[dict[str, Any]] = []
        for key in sorted(totals):
            t = totals[key]
            points = [{"t": round(s.t - now, 3), **s.points[key]} for s in samples if key in s.points]
            models.append(
                {
                    "model": key[0],
                    "version": key[1],
                    "requests": t.requests,
                    "errors": t.failures,
                    "in_flight": t.in_flight,
                    "p50_ms": _ms(quantile(0.5, t.latency)),
                    "p99_ms": _ms(quantile(0.99, t.latency)),
                    "points": points,
                }
            )
        return {"window_s": window, "interval_s": self.interval, "models": models, "charts": _charts(models)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _charts(models: list[dict[str, Any]]) -> dict[str, str]:
    # Versions that served nothing in the window would only add flat lines and legend entries.
    active = [m for m in models if any(p["requests_per_s"] > 0 for p in m["points"])]

    def lines(fields: dict[str, str], title: str, unit: str) -> str:
        series = {}
        for m in active:
            for field, suffix in fields.items():
                label = f"{m['model']} v{m['version']}{suffix}"
                series[label] = [(p["t"], p[field]) for p in m["points"]]
        return charts.lines(series, title=title, unit=unit)

    return {
        "requests": lines({"requests_per_s": ""}, "requests per second", "req/s"),
        "latency": lines({"p50_ms": " p50", "p99_ms": " p99"}, "latency in the server (p50, p99)", "ms"),
        "queue_compute": lines(
            {"queue_ms": " queue", "compute_ms": " compute"}, "queue wait vs compute per call (mean)", "ms"
        ),
        "batch": lines({"batch_rows": ""}, "rows per model call (mean batch size)", "rows"),
        "errors": lines({"errors_per_s": ""}, "errors per second", "err/s"),
    }
