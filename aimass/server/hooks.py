"""What happens as model versions come and go: warm-up, served-traffic monitors, lifecycle metrics.

The registry (:class:`aimass.server.registry.Registry`) calls each :class:`Hook` it holds, in order:
``on_load`` in the worker thread that built a version, before it serves (its memory is measured
across it, so a warm-up's allocations count); ``on_ready`` once it serves; ``on_unload`` when it
stops (unloaded or evicted); ``on_failure`` when a load failed; ``on_count`` whenever the versions
held, or their bytes, change. MLServer attaches batching to its registry the same way
(``on_model_load`` / ``on_model_unload``).

Example:
    >>> class Log(Hook):
    ...     def on_ready(self, served, seconds):
    ...         print(f"{served.name} v{served.version} loaded in {seconds:.2f} s")
    >>> registry = Registry(sources, hooks=[Log()], ...)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimass.errors import ModelNotFound
from aimass.model import Model
from aimass.server.monitoring import ServedMonitor, ServedMonitorCollector, has_profile
from aimass.server.warmup import warm_up

if TYPE_CHECKING:
    from aimass.server.metrics import Metrics
    from aimass.server.served import ServedModel
    from aimass.server.sources import Source

__all__ = ["MONITOR_MODES", "Hook", "LifecycleHook", "MonitorHook", "WarmupHook"]

MONITOR_MODES = ("auto", "all", "off")


class Hook:
    """A registry hook: override what you need; every method does nothing by default."""

    def on_load(self, served: ServedModel, source: Source) -> None:
        """``served`` was built from ``source`` and does not serve yet (a worker thread)."""

    def on_ready(self, served: ServedModel, seconds: float) -> None:
        """``served`` serves now; its load took ``seconds``."""

    def on_unload(self, served: ServedModel, *, eviction: bool) -> None:
        """``served`` stopped taking requests (``eviction``: to make room within the budget)."""

    def on_failure(self, name: str, version: str) -> None:
        """Loading ``name`` at ``version`` failed."""

    def on_count(self, versions: int, used: int) -> None:
        """``versions`` are held now (loaded, loading, draining), counted for ``used`` bytes."""


class WarmupHook(Hook):
    """One warm-up call per version loaded from a file (:mod:`aimass.server.warmup`).

    ``Model`` objects handed in have usually run already; those loaded here have not.
    """

    def on_load(self, served: ServedModel, source: Source) -> None:
        if not isinstance(source, Model):
            served.warmup = warm_up(served.model)


class MonitorHook(Hook):
    """Feeds a :class:`~aimass.server.monitoring.ServedMonitor` from every request of a version.

    ``mode``: ``"auto"`` for versions whose package carries a reference profile, ``"all"`` for
    every version (``"off"``: hold no hook). A version's monitor is kept across unloads and reloads,
    so its counts and window go on; :attr:`monitors` are exported at scrape time.
    """

    def __init__(self, mode: str, *, registry: Any = None) -> None:
        if mode not in MONITOR_MODES:
            raise ValueError(f"monitor must be one of {MONITOR_MODES}, got {mode!r}")
        self.mode = mode
        self.monitors: dict[tuple[str, str], ServedMonitor] = {}
        if mode != "off":
            ServedMonitorCollector(self.monitors, registry=registry)

    def on_load(self, served: ServedModel, source: Source) -> None:
        model = served.model
        if self.mode == "off" or (self.mode == "auto" and not has_profile(model.metadata)):
            return
        key = (served.name, served.version)
        found = self.monitors.get(key)
        if found is None:
            found = self.monitors[key] = ServedMonitor(model.schema, model.metadata, name=key[0], version=key[1])
        served.monitor = found

    def report(self, name: str, version: str) -> dict[str, Any]:
        """The JSON report of ``name`` at ``version``'s monitor; ModelNotFound when it has none."""
        found = self.monitors.get((name, version))
        if found is None:
            raise ModelNotFound(
                f"model {name!r} version {version!r} is not monitored: its package carries no reference profile "
                "(publish(..., reference=rows)), or the server runs with monitoring off"
            )
        return found.report()


class LifecycleHook(Hook):
    """The lifecycle metrics (:class:`aimass.server.metrics.LifecycleMetrics`), all updated here."""

    def __init__(self, metrics: Metrics) -> None:
        self.life = metrics.lifecycle()

    def on_ready(self, served: ServedModel, seconds: float) -> None:
        key = (served.name, served.version)
        self.life.loads.labels(*key).inc()
        self.life.load_seconds.labels(*key).observe(seconds)
        self.life.memory_bytes.labels(*key).set(served.memory)

    def on_unload(self, served: ServedModel, *, eviction: bool) -> None:
        key = (served.name, served.version)
        self.life.unloads.labels(*key).inc()
        if eviction:
            self.life.evictions.labels(*key).inc()
        self.life.memory_bytes.labels(*key).set(0)  # not removed: with worker processes the series lives in files

    def on_failure(self, name: str, version: str) -> None:
        self.life.load_failures.labels(name, version).inc()

    def on_count(self, versions: int, used: int) -> None:
        self.life.loaded.set(versions)
        self.life.loaded_bytes.set(used)
