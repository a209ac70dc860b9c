"""Prometheus metrics of a model server, in a registry of its own (many apps can live in one process).

Per model and version: requests, failures (by HTTP status), request latency, queue and compute
latency separately, rows per model call (the batch size the dynamic batcher achieved), and
requests in flight. Names follow Prometheus conventions with an ``aimass_`` prefix; the
counterparts in Triton are ``nv_inference_request_success``/``_failure``, ``nv_inference_queue_duration_us``
and ``nv_inference_compute_infer_duration_us``.

Example:
    >>> m = Metrics()
    >>> mm = m.model("fraud", "1")
    >>> mm.requests.inc()
    >>> b"aimass_requests_total" in m.render()[0]
    True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROCESS_ENV", "LifecycleMetrics", "Metrics", "ModelMetrics", "canary_gauges", "multiprocess_dir"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's name for the shared directory

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
    """The metric children of one model version, bound once so the hot path skips label lookups."""

    requests: Counter
    request_seconds: Histogram
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    in_flight: Gauge
    _failures: Counter
    _labels: tuple[str, str]

    def failure(self, status: int) -> None:
        """Count one failed request answered with HTTP ``status``."""
        self._failures.labels(*self._labels, str(status)).inc()

    def observe_batch(self, rows: int, waits: list[float], compute: float) -> None:
        """Record one model call: its rows, each request's queue wait, and the compute time."""
        self.batch_size.observe(rows)
        self.compute_seconds.observe(compute)
        for w in waits:
            self.queue_seconds.observe(w)


class Metrics:
    """All metrics of one server app, in its own ``CollectorRegistry``.

    Example:
        >>> body, content_type = Metrics().render()
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        r = self.registry
        self._requests = Counter("aimass_requests", "Inference requests received.", labels, registry=r)
        self._failures = Counter(
            "aimass_request_failures",
            "Inference requests that failed, by HTTP status.",
            (*labels, "status"),
            registry=r,
        )
        self._request_seconds = Histogram(
            "aimass_request_seconds",
            "Inference request latency in the server, body read to response.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_seconds = Histogram(
            "aimass_queue_seconds",
            "Time a request waited for its model call (dynamic batching queue).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._compute_seconds = Histogram(
            "aimass_compute_seconds", "Duration of one model call.", labels, buckets=_LATENCY_BUCKETS, registry=r
        )
        self._batch_size = Histogram(
            "aimass_batch_size", "Rows per model call.", labels, buckets=_BATCH_BUCKETS, registry=r
        )
        self._in_flight = Gauge(
            "aimass_requests_in_flight",
            "Inference requests being served.",
            labels,
            registry=r,
            multiprocess_mode="livesum",  # with worker processes: the sum over the live ones
        )
        self._children: dict[tuple[str, str], ModelMetrics] = {}

    def model(self, name: str, version: str) -> ModelMetrics:
        """The metrics of one model version (created on first use)."""
        key = (name, version)
        found = self._children.get(key)
        if found is None:
            found = ModelMetrics(
                requests=self._requests.labels(*key),
                request_seconds=self._request_seconds.labels(*key),
                queue_seconds=self._queue_seconds.labels(*key),
                compute_seconds=self._compute_seconds.labels(*key),
                batch_size=self._batch_size.labels(*key),
                in_flight=self._in_flight.labels(*key),
                _failures=self._failures,
                _labels=key,
            )
            self._children[key] = found
        return found

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type.

        In a worker process (:mod:`aimass.server.workers`) the counters, histograms and gauges are
        the sums over every worker, dead ones included for counters and histograms (what they
        counted did happen) and live ones only for gauges; collectors of other kinds report
        this worker alone.
        """
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        return generate_latest(_Merged(directory, self.registry)), CONTENT_TYPE_LATEST

    def lifecycle(self) -> LifecycleMetrics:
        """Loads, unloads, evictions and load time of model versions (created on first use)."""
        found: LifecycleMetrics | None = getattr(self, "_lifecycle", None)
        if found is None:
            found = self._lifecycle = LifecycleMetrics(self.registry)
        return found


def multiprocess_dir() -> str | None:
    """The directory worker processes share their metric values in, or None in a single process.

    Set by the supervisor (``PROMETHEUS_MULTIPROC_DIR``) before the workers start; prometheus-client
    picks file-backed values at import, so the environment alone would not prove this process uses them.

    Example:
        >>> multiprocess_dir() is None
        True
    """
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory or values.ValueClass is values.MutexValue:
        return None
    return directory


class _Merged:
    """A registry-like source for ``generate_latest``: every worker's file-backed metrics, summed,
    plus this process's collectors that keep no files (named once: the files win)."""

    def __init__(self, directory: str, local: CollectorRegistry) -> None:
        self.directory = directory
        self.local = local

    def collect(self) -> Iterator[Metric]:
        merged = list(MultiProcessCollector(None, path=self.directory).collect())
        names = {m.name for m in merged}
        yield from merged
        for family in self.local.collect():
            if family.name not in names:
                yield family


class LifecycleMetrics:
    """Model versions coming and going: what a server under a memory budget does (:mod:`aimass.server.budget`).

    ``aimass_model_loads_total``, ``aimass_model_load_failures_total``, ``aimass_model_unloads_total``,
    ``aimass_model_evictions_total`` (unloads to make room), ``aimass_model_load_seconds`` (histogram,
    warm-up included), per model and version; ``aimass_model_memory_bytes`` (what each loaded version
    is counted for), ``aimass_models_loaded`` and ``aimass_models_loaded_bytes`` (totals).

    Example:
        >>> life = Metrics().lifecycle()
        >>> life.loads.labels("fraud", "1").inc()
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "version")
        r = registry
        self.loads = Counter("aimass_model_loads", "Model versions loaded.", labels, registry=r)
        self.load_failures = Counter("aimass_model_load_failures", "Loads that failed.", labels, registry=r)
        self.unloads = Counter("aimass_model_unloads", "Versions unloaded, evictions included.", labels, registry=r)
        self.evictions = Counter(
            "aimass_model_evictions", "Model versions unloaded to make room under the budget.", labels, registry=r
        )
        self.load_seconds = Histogram(
            "aimass_model_load_seconds",
            "Time to load a model version, warm-up included.",
            labels,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.memory_bytes = Gauge(
            "aimass_model_memory_bytes",
            "Memory a loaded model version is counted for.",
            labels,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loaded = Gauge(
            "aimass_models_loaded",
            "Model versions loaded (draining ones included).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loaded_bytes = Gauge(
            "aimass_models_loaded_bytes",
            "Memory counted for the loaded model versions.",
            registry=r,
            multiprocess_mode="livesum",
        )


def canary_gauges(registry: CollectorRegistry) -> dict[str, Gauge]:
    """The canary gauges in ``registry`` (labels ``model``, ``alias``): make them once per registry and
    hand them to every :class:`~aimass.server.canary.CanaryAnalysis` of the server.

    Example:
        >>> sorted(canary_gauges(CollectorRegistry()))[:2]   # doctest: +SKIP
        ['aimass_canary_agreement', 'aimass_canary_error_rate_delta']
    """
    return {
        name: Gauge(name, text, ("model", "alias"), registry=registry)
        for name, text in (
            ("aimass_canary_weight", "Share of an alias's traffic its canary gets (0: no canary)."),
            ("aimass_canary_error_rate_delta", "Canary error rate minus the stable version's, this window."),
            (
                "aimass_canary_latency_ratio",
                "Canary latency (the policy's quantile) over the stable version's, this window.",
            ),
            ("aimass_canary_agreement", "Share of mirrored rows where the canary agreed, this window."),
        )
    }
