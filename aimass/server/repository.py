"""The models a server holds: where they come from, which are loaded, and how each one is run.

A repository directory uses Triton's layout, ``<root>/<name>/<version>/``, where each version
directory is an aimass package (:mod:`aimass.package`); the model library writes exactly this
layout, so ``aimass serve <library root>`` serves it. A ``<root>/<name>/`` that is itself a package
is served as version ``1``, and a root that is a package is served as one model. Models can also be
given explicitly (``Model`` objects, files, packages), with or without a repository.

Example:
    >>> repo = Repository(root="models/")                     # doctest: +SKIP
    >>> repo.get("fraud", None).version                       # doctest: +SKIP
    '3'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from aimass import redaction
from aimass.errors import AimassError, ModelLoadError, ModelNotFound, ServiceUnavailable
from aimass.model import Model
from aimass.package import is_package, read_manifest
from aimass.protocol import documents
from aimass.server.batching import Batcher, Placement
from aimass.server.budget import Budget, growth_since, package_bytes, release_memory, resident_bytes
from aimass.server.metrics import Metrics, ModelMetrics
from aimass.server.monitoring import ServedMonitor, ServedMonitorCollector, has_profile
from aimass.server.tracing import MARKS, Marks
from aimass.server.tracing import now as trace_clock
from aimass.server.versions import version_key
from aimass.server.warmup import WarmupResult, serving_settings, warm_up

__all__ = ["LOADING", "MONITOR_MODES", "BatchingConfig", "Budget", "Limits", "Repository", "ServedModel", "version_key"]

log = logging.getLogger("aimass.server")

Source = Model | Path
LOADING = "LOADING"  # Triton's state of a version being loaded (index); READY / UNAVAILABLE: documents
MONITOR_MODES = ("auto", "all", "off")


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching knobs (Triton's names). ``max_batch_size=0`` turns batching off.

    Example:
        >>> BatchingConfig(max_batch_size=64, max_queue_delay=0.0005)
        BatchingConfig(max_batch_size=64, max_queue_delay=0.0005, max_concurrency=2, inline_below=0.0002)
    """

    max_batch_size: int = 64
    max_queue_delay: float = 0.0
    max_concurrency: int = 2
    inline_below: float = 0.0002  # calls proven shorter than this run on the event loop (batching.Placement)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per model version: how many requests it may hold, and how long one may take. 0 / None = no limit.

    ``max_queue_size`` counts the requests a model version holds at once, queued or running (a
    request that timed out still counts until its model call really ends, since a thread cannot be
    stopped); one more is refused with 503 and ``Retry-After``. ``request_timeout`` (seconds)
    answers 504 when a request takes longer; setting it keeps every model call off the event loop
    (no inline placement), because a call on the loop could not be timed out.

    Example:
        >>> Limits(max_queue_size=256, request_timeout=5.0)
        Limits(max_queue_size=256, request_timeout=5.0, retry_after=1)
    """

    max_queue_size: int = 0
    request_timeout: float | None = None
    retry_after: int = 1  # seconds, sent in Retry-After with each 503


def _batchable(model: Model) -> bool:
    s = model.schema
    return all(t.shape[:1] == [-1] for t in s.inputs) and all(t.shape[:1] == [-1] for t in s.outputs)


def _inside(path: Path, real_root: Path) -> bool:
    """False for a symlink that leads out of the repository root (refused, with a warning)."""
    if not path.is_symlink():
        return True
    if path.resolve().is_relative_to(real_root):
        return True
    log.warning("not serving %s: a symbolic link out of the repository root", path.name)
    return False


class ServedModel:
    """One loaded model version: validation, the batcher (or a direct call), metrics, cached JSON."""

    def __init__(
        self,
        name: str,
        version: str,
        model: Model,
        *,
        batching: BatchingConfig,
        executor: Executor,
        metrics: ModelMetrics,
        limits: Limits | None = None,
        monitor: ServedMonitor | None = None,
    ) -> None:
        limits = limits or Limits()
        if limits.max_queue_size < 0:
            raise ValueError(f"max_queue_size must be >= 0 (0: no limit), got {limits.max_queue_size}")
        if limits.request_timeout is not None and limits.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds or None, got {limits.request_timeout}")
        self.name = name
        self.version = version
        self.model = model
        self.metrics = metrics
        self.executor = executor
        self.output_names = model.schema.output_names
        self._coerce = model.schema.coerce
        self._run = model.backend.run
        self.max_queue_size = limits.max_queue_size
        self.request_timeout = limits.request_timeout
        self.retry_after = limits.retry_after
        self.outstanding = 0  # requests admitted and not finished (queued, running, or timed out but running)
        inline_below = 0.0 if limits.request_timeout else batching.inline_below
        self.batcher: Batcher | None = None
        if batching.max_batch_size > 0 and _batchable(model):
            self.batcher = Batcher(
                self._run,
                max_batch_size=batching.max_batch_size,
                max_queue_delay=batching.max_queue_delay,
                max_concurrency=batching.max_concurrency,
                executor=executor,
                observer=metrics.observe_batch,
                inline_below=inline_below,
            )
        self.placement = Placement(executor, inline_below)
        self.max_batch_size = self.batcher.max_batch_size if self.batcher else 0
        self.max_queue_delay = batching.max_queue_delay if self.batcher else 0.0
        self.platform = f"aimass_{model.backend_name}"
        self.monitor = monitor  # fed by every request when the package carries a reference profile
        # Under a budget (Repository): requests holding this version, when it was last used, the bytes
        # it is counted for, pinned (never evicted), and the future a draining eviction waits on.
        self.users = 0
        self.last_used = 0
        self.memory = 0
        self.pinned = False
        self.drained: asyncio.Future[None] | None = None
        self.warmup: WarmupResult | None = None  # what its warm-up did, when it had one

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate (SchemaError names the tensor) and run, batched when batching is on.

        Raises ServiceUnavailable: 503 when ``max_queue_size`` requests are already held, 504 past
        ``request_timeout``. A monitored version records the request (inputs, outputs, latency) or
        its failure.
        """
        mon = self.monitor
        if mon is None:
            return await self._admit(self._coerce(inputs))
        start = time.perf_counter()
        try:
            ready = self._coerce(inputs)
            out = await self._admit(ready)
        except Exception:
            mon.record_error()
            raise
        mon.record(ready, out, time.perf_counter() - start)
        return out

    async def _admit(self, ready: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        limit = self.max_queue_size
        if limit and self.outstanding >= limit:
            raise ServiceUnavailable(
                f"model {self.name!r} version {self.version!r} is at its limit of {limit} queued or running "
                "requests (max_queue_size); retry later",
                retry_after=self.retry_after,
            )
        if self.request_timeout is not None:
            return await self._infer_with_timeout(ready, self.request_timeout)
        self.outstanding += 1
        try:
            return await self._call(ready)
        finally:
            self.outstanding -= 1

    async def _call(self, ready: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.batcher is not None:
            return await self.batcher.submit(ready)
        marks = MARKS.get()
        if marks is not None:  # a traced request (aimass.server.tracing): note when the model call ran
            traced: dict[str, np.ndarray] = await self.placement.call(self._timed_marked, ready, marks)
            return traced
        out: dict[str, np.ndarray] = await self.placement.call(self._timed, ready)
        return out

    def _timed_marked(self, inputs: dict[str, np.ndarray], marks: Marks) -> dict[str, np.ndarray]:
        marks.compute_start = trace_clock()
        try:
            return self._timed(inputs)
        finally:
            marks.compute_end = trace_clock()

    async def _infer_with_timeout(self, ready: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        # The call runs as its own task, shielded: on timeout the client gets 504 at once, while the
        # task (and its worker thread, which cannot be stopped) keeps its queue slot until it ends.
        task = asyncio.ensure_future(self._call(ready))
        self.outstanding += 1
        task.add_done_callback(self._call_done)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise ServiceUnavailable(
                f"model {self.name!r} version {self.version!r} did not answer within {timeout:g} s (request_timeout)",
                status_code=504,
            ) from None

    def _call_done(self, task: asyncio.Future[Any]) -> None:
        self.outstanding -= 1
        if not task.cancelled():
            task.exception()  # retrieved, so a timed-out call's late failure is not reported as unhandled

    def _timed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self._run(inputs)
        first = next(iter(inputs.values()), None)
        rows = first.shape[0] if first is not None and first.ndim else 1
        self.metrics.observe_batch(rows, [0.0], time.perf_counter() - start)
        return out

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The V2 model metadata document (:func:`aimass.protocol.documents.model_metadata`)."""
        return documents.model_metadata(self.name, versions, self.model.schema, platform=self.platform)

    def config(self) -> dict[str, Any]:
        """A Triton-style model configuration (what tritonclient and perf_analyzer read)."""
        return documents.model_config(
            self.name,
            self.model.schema,
            version=self.version,
            platform=self.platform,
            backend=self.model.backend_name,
            device=self.model.device,
            max_batch_size=self.max_batch_size,
            max_queue_delay=self.max_queue_delay,
        )


class Repository:
    """Sources of models (a repository directory and/or explicit models) and the loaded versions.

    ``models`` maps a name to a ``Model`` or a path (model file or package), or to a mapping of
    version -> source; ``model_options`` go to the backends (e.g. ``{"session_options":
    {"intra_op_num_threads": 1}}`` for onnx).

    Without a ``budget`` everything found is loaded at construction. With one
    (:class:`~aimass.server.budget.Budget`: ``max_loaded_models`` and/or ``memory_budget``), model
    versions load on demand: on their first request (:meth:`acquire`), or at construction when
    pinned (``pinned`` names, or ``metadata["serving"]["pinned"]`` in the package; explicit
    ``Model`` objects are always loaded). When a load would exceed the budget the least recently
    used version is unloaded first: an idle one when there is one, else a busy one, which stops
    taking requests at once and keeps its memory counted until its running requests finish, so
    no request fails because its model was unloaded, and the budget holds. Concurrent first
    requests for a version load it once (a lock per version); loads run one at a time in a
    worker thread so each one's memory can be measured (:mod:`aimass.server.budget`).

    ``warmup`` runs one warm-up call per version as it loads (:mod:`aimass.server.warmup`).
    ``monitor``: ``"auto"`` feeds a :class:`~aimass.server.monitoring.ServedMonitor` from every
    request of a version whose package carries a reference profile, ``"all"`` for every version,
    ``"off"`` for none.

    Example:
        >>> repo = Repository(models={"mlp": Model.load("mlp.onnx")})   # doctest: +SKIP
        >>> repo = Repository("library/", budget=Budget(max_loaded_models=3))   # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        models: Mapping[str, Model | str | Path | Mapping[str, Model | str | Path]] | None = None,
        *,
        batching: BatchingConfig | None = None,
        executor: Executor,
        metrics: Metrics,
        model_options: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        budget: Budget | None = None,
        pinned: Collection[str] = (),
        warmup: bool = True,
        monitor: str = "auto",
    ) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ModelLoadError(f"model repository {str(self.root)!r} is not a directory")
        if monitor not in MONITOR_MODES:
            raise ValueError(f"monitor must be one of {MONITOR_MODES}, got {monitor!r}")
        self.batching = batching or BatchingConfig()
        self.limits = limits or Limits()
        self.model_options = dict(model_options) if model_options else None
        self.executor = executor
        self.metrics = metrics
        self.budget = budget or Budget()
        self.lazy = self.budget.enabled
        self.pinned = frozenset(pinned)
        self.warmup = warmup
        self.monitor_mode = monitor
        self.monitors: dict[tuple[str, str], ServedMonitor] = {}
        if monitor != "off":
            ServedMonitorCollector(self.monitors, registry=metrics.registry)
        self._life = metrics.lifecycle()
        self._explicit: dict[str, dict[str, Source]] = {}
        for name, src in (models or {}).items():
            versions = src if isinstance(src, Mapping) else {"1": src}
            self._explicit[name] = {str(v): s if isinstance(s, Model) else Path(s) for v, s in versions.items()}
        self._loaded: dict[str, dict[str, ServedModel]] = {}
        self._latest: dict[str, ServedModel] = {}
        self._errors: dict[str, str] = {}
        self._aliases: dict[str, tuple[int, dict[str, dict[int, float]]]] = {}
        self._lock = threading.Lock()
        # Under a budget: why a version is not loaded, the versions loading now, the evicted ones still
        # running requests, the highest count of versions held at once, and the per-loop locks.
        self._reasons: dict[tuple[str, str], str] = {}
        self._loading: dict[tuple[str, str], int] = {}
        self._draining: list[ServedModel] = []
        self.peak_loaded = 0
        self._evicted_since_collect = False
        self._tick = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._load_lock: asyncio.Lock | None = None
        if self.lazy:
            self._load_pinned()
            return
        for name in self.sources():
            try:
                self.load(name)
            except Exception:
                # One broken package (a remote host down, a framework's bare RuntimeError ...) must not
                # stop the others: load() marked it UNAVAILABLE with its reason and logged it. A model
                # the caller handed in by name is the caller's own input: its failure is theirs to see.
                if name in self._explicit:
                    raise

    # -- discovery ----------------------------------------------------------------------------

    def sources(self) -> dict[str, dict[str, Source]]:
        """Every model this repository can load: name -> version -> source (directory rescanned)."""
        found: dict[str, dict[str, Source]] = {}
        root = self.root
        if root is not None:
            if is_package(root):
                found[root.name] = {"1": root}
            else:
                real_root = root.resolve()
                for d in sorted(root.iterdir()):
                    if not d.is_dir() or d.name.startswith(".") or not _inside(d, real_root):
                        continue
                    if is_package(d):
                        found[d.name] = {"1": d}
                        continue
                    on_disk: dict[str, Source] = {
                        # Hidden entries are a library's unfinished publishes (.staging-*): never served.
                        v.name: v
                        for v in d.iterdir()
                        if v.is_dir() and not v.name.startswith(".") and _inside(v, real_root) and is_package(v)
                    }
                    if on_disk:
                        found[d.name] = on_disk
        for name, explicit in self._explicit.items():
            found.setdefault(name, {}).update(explicit)
        return found

    # -- lifecycle ----------------------------------------------------------------------------

    def _build(self, name: str, version: str, src: Source) -> ServedModel:
        """Load one version from its source, warm it up, and wrap it for serving (worker thread)."""
        model = src if isinstance(src, Model) else Model.load(src, options=self.model_options)
        # Models handed in as objects have usually run already; those loaded here have not.
        warmed = warm_up(model) if self.warmup and not isinstance(src, Model) else None
        served = ServedModel(
            name,
            version,
            model,
            batching=self.batching,
            executor=self.executor,
            metrics=self.metrics.model(name, version),
            limits=self.limits,
            monitor=self._monitor_for(name, version, model),
        )
        served.warmup = warmed
        return served

    def _monitor_for(self, name: str, version: str, model: Model) -> ServedMonitor | None:
        mode = self.monitor_mode
        if mode == "off" or (mode == "auto" and not has_profile(model.metadata)):
            return None
        key = (name, version)
        found = self.monitors.get(key)
        if found is None:  # kept across unloads and reloads, so the counts and the window go on
            found = ServedMonitor(model.schema, model.metadata, name=name, version=version)
            self.monitors[key] = found
        return found

    def load(self, name: str) -> list[str]:
        """(Re)load every version of ``name``; returns the versions now loaded.

        Under a budget use :meth:`aload` (from the event loop): it makes room first.
        """
        versions = self.sources().get(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not in the repository")
        served: dict[str, ServedModel] = {}
        for version, src in versions.items():
            start = time.perf_counter()
            try:
                served[version] = self._build(name, version, src)
            except Exception as e:
                self._life.load_failures.labels(name, version).inc()
                why = self._failed(name, version, e)
                self._errors[name] = why
                if isinstance(e, AimassError):
                    raise
                # Typed, so the load request answers 400 with the short reason, not a 500 traceback.
                raise ModelLoadError(f"model {name!r} version {version!r}: {why}") from e
            self._life.loads.labels(name, version).inc()
            self._life.load_seconds.labels(name, version).observe(time.perf_counter() - start)
        with self._lock:
            self._loaded[name] = served
            self._latest[name] = served[max(served, key=version_key)]
            self._errors.pop(name, None)
        self._count()
        return sorted(served, key=version_key)

    @staticmethod
    def _failed(name: str, version: str, error: BaseException) -> str:
        """Log a failed load with a short redacted reason, and return that reason (index, answers)."""
        why = f"load failed: {redaction.reason(error)}"
        log.error("model %r version %r is UNAVAILABLE: %s", name, version, why)
        return why

    async def aload(self, name: str) -> list[str]:
        """:meth:`load` from the event loop: under a budget, each version loads within it (LRU eviction)."""
        if not self.lazy:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.load, name)
        versions = self.sources().get(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not in the repository")
        for version in sorted(versions, key=version_key):
            await self._ensure(name, version, versions)
        return sorted(self._loaded.get(name, {}), key=version_key)

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (requests already running finish)."""
        with self._lock:
            versions = self._loaded.pop(name, None)
            if versions is None:
                if name not in self.sources():
                    raise ModelNotFound(f"model {name!r} is not in the repository")
                return
            self._latest.pop(name, None)
        for served in versions.values():
            self._retire(served, "unloaded", eviction=False)

    def _load_pinned(self) -> None:
        for name, versions in self.sources().items():
            for version, src in versions.items():
                if not self._is_pinned(name, src):
                    continue
                start = time.perf_counter()
                before = resident_bytes()
                try:
                    served = self._build(name, version, src)
                except Exception as e:
                    if isinstance(src, Model) or name in self._explicit:
                        raise  # the caller's own input (see __init__)
                    self._life.load_failures.labels(name, version).inc()
                    self._reasons[(name, version)] = self._failed(name, version, e)
                    continue
                served.pinned = True
                served.memory = max(growth_since(before, collect=False), package_bytes(src))
                self._install(served, versions, time.perf_counter() - start)
        count, used = self._usage()
        if not self.budget.fits(count, used):
            raise ValueError(
                f"the pinned models ({count} versions, {used} bytes) do not fit the budget ({self.budget.describe()})"
            )

    def _is_pinned(self, name: str, src: Source) -> bool:
        if isinstance(src, Model) or name in self.pinned:
            return True
        if isinstance(src, Path) and is_package(src):
            try:
                return bool(serving_settings(read_manifest(src).metadata).get("pinned", False))
            except ModelLoadError:
                return False  # a broken package fails when it is asked for, with its own error
        return False

    # -- on demand, under the budget ------------------------------------------------------------

    async def acquire(self, name: str, version: str | None) -> ServedModel:
        """The version one request runs on, loaded first when needed; give it back with :meth:`release`.

        While held, the version is never unloaded under the request (an eviction waits for it).

        Example:
            >>> served = await repo.acquire("fraud", None)   # doctest: +SKIP
            >>> try: out = await served.infer(inputs)        # doctest: +SKIP
            ... finally: repo.release(served)
        """
        try:
            served = self.get(name, version)
        except ModelNotFound:
            if not self.lazy:
                raise
            served = await self._ensure(name, version)
        served.users += 1
        self._tick += 1
        served.last_used = self._tick
        return served

    def release(self, served: ServedModel) -> None:
        """A request is done with ``served`` (see :meth:`acquire`)."""
        served.users -= 1
        if served.users == 0 and served.drained is not None and not served.drained.done():
            if served in self._draining:
                self._draining.remove(served)
            served.drained.set_result(None)
            self._count()

    def _locks(self) -> tuple[asyncio.Lock, dict[tuple[str, str], asyncio.Lock]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._load_lock is None:
            # Locks belong to one loop; a repository used from another (tests run several) starts afresh.
            self._loop, self._load_lock, self._version_locks = loop, asyncio.Lock(), {}
        return self._load_lock, self._version_locks

    async def _ensure(
        self, name: str, version: str | None, versions: Mapping[str, Source] | None = None
    ) -> ServedModel:
        if versions is None:
            versions = self.sources().get(name)
            if not versions:
                raise ModelNotFound(f"unknown model {name!r}; models are {sorted(self.sources())}")
        picked = self._pick(name, version, versions)
        key = (name, picked)
        load_lock, version_locks = self._locks()
        lock = version_locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent first requests: one loads, the others find it loaded
            found = self._loaded.get(name, {}).get(picked)
            if found is not None:
                return found
            async with load_lock:  # one load at a time, so its memory growth is its own
                return await self._load_version(name, picked, versions)

    def _pick(self, name: str, version: str | None, versions: Mapping[str, Source]) -> str:
        if version is None:
            return max(versions, key=version_key)
        if version in versions:
            return version
        if not version.isdigit():
            picked = self._alias(name, version)
            if picked is not None and picked in versions:
                return picked
        known = sorted(versions, key=version_key)
        raise ModelNotFound(f"model {name!r} has no version {version!r}; versions are {known}")

    async def _load_version(self, name: str, version: str, versions: Mapping[str, Source]) -> ServedModel:
        src = versions[version]
        key = (name, version)
        estimate = package_bytes(src)
        await self._make_room(1, estimate, key)
        self._loading[key] = estimate
        self._count()
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            served, before, grown = await loop.run_in_executor(self.executor, self._build_measured, name, version, src)
            served.memory = max(grown, estimate)
            if self.budget.memory_budget and served.memory > self.budget.memory_budget:
                # The growth also holds what requests running meanwhile allocated: before refusing
                # the model, measure once more after a full collection has handed that back.
                served.memory = max(await loop.run_in_executor(self.executor, growth_since, before), estimate)
        except Exception as e:
            self._life.load_failures.labels(name, version).inc()
            why = self._reasons[key] = self._failed(name, version, e)
            # Whatever the load raised (a remote's 403, a framework's RuntimeError), the request that
            # asked for the model gets one clear answer; the next request tries to load it again.
            raise ServiceUnavailable(
                f"model {name!r} version {version!r} is unavailable: {why}", retry_after=self.limits.retry_after
            ) from e
        finally:
            self._loading.pop(key, None)
        if self.budget.memory_budget and served.memory > self.budget.memory_budget:
            self._life.load_failures.labels(name, version).inc()
            reason = (
                f"model {name!r} version {version!r} takes {served.memory} bytes, more than the whole memory "
                f"budget of {self.budget.memory_budget} bytes"
            )
            self._reasons[key] = reason
            self._count()
            raise ServiceUnavailable(reason, status_code=507)
        self._install(served, versions, time.perf_counter() - start)
        await self._make_room(0, 0, key)  # it measured more than its files: trim the others
        return served

    def _build_measured(self, name: str, version: str, src: Source) -> tuple[ServedModel, int, int]:
        """The built version, the resident bytes before it and its growth (see :func:`growth_since`)."""
        # What evicted models held goes now, not in the middle of the measurement (a full collection
        # costs ms to tens of ms: only when something was evicted since the last one).
        release_memory(collect=self._evicted_since_collect)
        self._evicted_since_collect = False
        before = resident_bytes()
        served = self._build(name, version, src)
        # Count what the model keeps, not the file bytes and parse buffers its load freed.
        return served, before, growth_since(before, collect=False)

    def _install(self, served: ServedModel, versions: Mapping[str, Source], seconds: float) -> None:
        name, version = served.name, served.version
        self._tick += 1
        served.last_used = self._tick
        with self._lock:
            self._loaded.setdefault(name, {})[version] = served
            if version == max(versions, key=version_key):
                self._latest[name] = served
        self._reasons.pop((name, version), None)
        life = self._life
        life.loads.labels(name, version).inc()
        life.load_seconds.labels(name, version).observe(seconds)
        life.memory_bytes.labels(name, version).set(served.memory)
        self._count()

    def _usage(self) -> tuple[int, int]:
        held = [s for versions in self._loaded.values() for s in versions.values()] + self._draining
        return len(held) + len(self._loading), sum(s.memory for s in held) + sum(self._loading.values())

    def _count(self) -> None:
        count, used = self._usage()
        self.peak_loaded = max(self.peak_loaded, count)
        self._life.loaded.set(count)
        self._life.loaded_bytes.set(used)

    async def _make_room(self, models: int, memory: int, key: tuple[str, str]) -> None:
        while True:
            count, used = self._usage()
            if self.budget.fits(count + models, used + memory):
                return
            victim = self._victim(idle=True, keep=key)
            if victim is None and self._draining:
                # Only busy versions are left: wait for an evicted one to finish its requests.
                await asyncio.wait([s.drained for s in self._draining if s.drained], return_when="FIRST_COMPLETED")
                continue
            victim = victim or self._victim(idle=False, keep=key)
            if victim is None:
                raise ServiceUnavailable(
                    f"no room to load model {key[0]!r} version {key[1]!r} within the budget "
                    f"({self.budget.describe()}): {count} versions held, pinned or loading",
                    retry_after=self.limits.retry_after,
                )
            with self._lock:
                versions = self._loaded.get(victim.name, {})
                versions.pop(victim.version, None)
                if not versions:
                    self._loaded.pop(victim.name, None)
                if self._latest.get(victim.name) is victim:
                    self._latest.pop(victim.name)
            self._retire(victim, f"evicted (least recently used; budget {self.budget.describe()})", eviction=True)

    def _victim(self, *, idle: bool, keep: tuple[str, str]) -> ServedModel | None:
        candidates = [
            s
            for versions in self._loaded.values()
            for s in versions.values()
            if not s.pinned and (s.users == 0) == idle and (s.name, s.version) != keep
        ]
        return min(candidates, key=lambda s: s.last_used, default=None)

    def _retire(self, served: ServedModel, reason: str, *, eviction: bool) -> None:
        """Account for a version that stopped taking requests: free now, or drain when requests hold it."""
        key = (served.name, served.version)
        self._reasons[key] = reason
        life = self._life
        life.unloads.labels(*key).inc()
        if eviction:
            life.evictions.labels(*key).inc()
        life.memory_bytes.labels(*key).set(0)  # not removed: with worker processes the series lives in files
        self._evicted_since_collect = True
        if served.users > 0 and self.lazy:
            try:
                served.drained = asyncio.get_running_loop().create_future()
            except RuntimeError:  # unloaded from outside the loop: nothing can wait on it
                served.drained = None
            else:
                self._draining.append(served)
        self._count()

    # -- lookup -------------------------------------------------------------------------------

    def get(self, name: str, version: str | None) -> ServedModel:
        """The loaded model ``name`` at ``version`` (None: the highest); ModelNotFound otherwise.

        Under a budget a version may not be loaded yet: :meth:`acquire` loads it.
        """
        if version is None:
            found = self._latest.get(name)
            if found is not None:
                return found
        else:
            versions = self._loaded.get(name)
            if versions is not None:
                got = versions.get(version)
                if got is not None:
                    return got
                if not version.isdigit():
                    picked = self._alias(name, version)
                    if picked is not None and picked in versions:
                        return versions[picked]
                known = sorted(versions, key=version_key)
                raise ModelNotFound(f"model {name!r} has no version {version!r}; loaded versions are {known}")
        failed = self._errors.get(name)
        if failed is not None and name not in self._loaded:
            raise ServiceUnavailable(
                f"model {name!r} is unavailable: {failed}; once fixed: POST /v2/repository/models/{name}/load"
            )
        if name in self._explicit or name in self.sources():
            raise ModelNotFound(f"model {name!r} is not loaded: POST /v2/repository/models/{name}/load")
        raise ModelNotFound(f"unknown model {name!r}; models are {sorted(self._loaded)}")

    def _alias(self, name: str, alias: str) -> str | None:
        """A model-library alias (``<root>/<name>/aliases.json``) as a version, drawn by canary weight."""
        if self.root is None:
            return None
        file = self.root / name / "aliases.json"
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._aliases.get(name)
        if cached is None or cached[0] != mtime:
            from aimass.store import Store  # only libraries with aliases pay the import

            cached = (mtime, Store(self.root).aliases(name))
            self._aliases[name] = cached
        weights = cached[1].get(alias)
        if not weights:
            return None
        from aimass.store import pick_version

        return str(pick_version(weights))

    def servable(self, name: str, version: str | None) -> None:
        """ModelNotFound unless ``name`` at ``version`` is loaded or (under a budget) can load on demand."""
        if not self.lazy:
            self.get(name, version)
            return
        versions = self.sources().get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; models are {sorted(self.sources())}")
        picked = self._pick(name, version, versions)
        why = self._reasons.get((name, picked), "")
        if why.startswith("load failed"):
            raise ServiceUnavailable(f"model {name!r} version {picked!r} is unavailable: {why}")

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` served: loaded ones, or under a budget every loadable one."""
        if self.lazy:
            return sorted(self.sources().get(name, {}), key=version_key)
        return sorted(self._loaded.get(name, {}), key=version_key)

    def loaded(self) -> list[ServedModel]:
        return [m for versions in list(self._loaded.values()) for m in versions.values()]

    def ready(self) -> bool:
        """Whether the server can answer: something is loaded, or (under a budget) something can load."""
        return bool(self._loaded) or (self.lazy and bool(self.sources()))

    def monitor_report(self, name: str, version: str | None) -> dict[str, Any]:
        """The JSON report of a served version's monitor (:meth:`ServedMonitor.report`)."""
        versions = self.sources().get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; models are {sorted(self.sources())}")
        picked = self._pick(name, version, versions)
        found = self.monitors.get((name, picked))
        if found is None:
            raise ModelNotFound(
                f"model {name!r} version {picked!r} is not monitored: its package carries no reference profile "
                "(publish(..., reference=rows)), or the server runs with monitoring off"
            )
        return found.report()

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index: every model version and its state (READY / LOADING / UNAVAILABLE with a reason)."""
        out: list[dict[str, Any]] = []
        for name, versions in sorted(self.sources().items()):
            loaded = self._loaded.get(name, {})
            for version in sorted(versions, key=version_key):
                if version in loaded:
                    out.append(documents.index_entry(name, version))
                elif ready_only:
                    continue
                elif (name, version) in self._loading:
                    out.append(documents.index_entry(name, version, LOADING, "loading"))
                else:
                    default = "not loaded yet (loads on its first request)" if self.lazy else "unloaded"
                    reason = self._reasons.get((name, version)) or self._errors.get(name, default)
                    out.append(documents.index_entry(name, version, documents.UNAVAILABLE, reason))
        return out
