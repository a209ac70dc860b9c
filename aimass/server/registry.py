"""The model versions a server holds loaded, and the one path a request takes to one of them.

:meth:`Registry.acquire` finds the loaded version a request asks for (:meth:`Registry.get`, the
version resolved by :meth:`aimass.server.sources.Sources.resolve`), or loads it first. Every load
takes one path: build in a worker thread (the hooks' ``on_load`` run there: warm-up, monitors),
measure its memory, install, ``on_ready``; every unload or eviction another: ``on_unload``
(:mod:`aimass.server.hooks`). The budget decides what goes when room is needed
(:class:`aimass.server.budget.Residency`).

There is one mode with a parameter, ``on_demand``. Without a budget it is off: every version is
pinned, loaded at start, and a version not loaded (unloaded, or failed to load) answers until a
``POST /v2/repository/models/<name>/load`` (re)loads it. With a budget it is on: only pinned versions
(``pinned`` names, ``metadata["serving"]["pinned"]``, ``Model`` objects) load at start, the others
on their first request; concurrent first requests load once (a lock per version), and loads run one
at a time so that each one's memory growth is its own (:mod:`aimass.server.budget`).

Example:
    >>> registry = Registry(Sources("models/"), executor=pool, metrics=Metrics())   # doctest: +SKIP
    >>> served = await registry.acquire("fraud", "production")                      # doctest: +SKIP
    >>> try: out = await served.infer(inputs)                                        # doctest: +SKIP
    ... finally: registry.release(served)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import Executor
from typing import Any

from aimass import redaction
from aimass.errors import AimassError, ModelLoadError, ModelNotFound, ServiceUnavailable
from aimass.model import Model
from aimass.protocol import documents
from aimass.server.budget import Budget, Residency, growth_since, package_bytes, release_memory, resident_bytes
from aimass.server.hooks import Hook
from aimass.server.metrics import Metrics
from aimass.server.served import BatchingConfig, Limits, ServedModel
from aimass.server.sources import Source, Sources, latest
from aimass.server.versions import version_key

__all__ = ["LOADING", "Registry"]

log = logging.getLogger("aimass.server")

LOADING = "LOADING"  # Triton's state of a version being loaded (index); READY / UNAVAILABLE: documents


class Registry:
    """Loaded model versions from ``sources``, within ``budget``, with ``hooks`` called as they come and go.

    ``model_options`` go to the backends (e.g. ``{"session_options": {"intra_op_num_threads": 1}}``
    for onnx). ``on_demand`` defaults to ``budget.enabled`` (see the module's docstring).

    Example:
        >>> Registry(Sources(models={"mlp": m}), executor=pool, metrics=Metrics()).get("mlp", None)  # doctest: +SKIP
    """

    def __init__(
        self,
        sources: Sources,
        *,
        executor: Executor,
        metrics: Metrics,
        batching: BatchingConfig | None = None,
        model_options: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        budget: Budget | None = None,
        pinned: Collection[str] = (),
        hooks: Iterable[Hook] = (),
        on_demand: bool | None = None,
    ) -> None:
        self.origins = sources
        self.executor = executor
        self.metrics = metrics
        self.batching = batching or BatchingConfig()
        self.model_options = dict(model_options) if model_options else None
        self.limits = limits or Limits()
        self.budget = budget or Budget()
        self.on_demand = self.budget.enabled if on_demand is None else on_demand
        self.pinned = frozenset(pinned)
        self.hooks = list(hooks)
        self._loaded: dict[str, dict[str, ServedModel]] = {}
        self._latest: dict[str, ServedModel] = {}
        self._reasons: dict[tuple[str, str], str] = {}  # why a version is not loaded (index, answers)
        self._lock = threading.Lock()
        self.residency = Residency(
            self.budget,
            loaded=self.loaded,
            evict=self._evict,
            counted=self._counted,
            retry_after=self.limits.retry_after,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._load_lock: asyncio.Lock | None = None
        self._load_at_start()

    @property
    def peak_loaded(self) -> int:
        """The most versions held at once (loaded, loading and draining)."""
        return self.residency.peak_loaded

    # -- lookup ---------------------------------------------------------------------------------

    def get(self, name: str, version: str | None) -> ServedModel:
        """The loaded model ``name`` at ``version`` (None: the highest); ModelNotFound otherwise.

        When versions load on demand one may not be loaded yet: :meth:`acquire` loads it.
        """
        found = self._find(name, version)
        if found is not None:
            return found
        if not self.on_demand and name not in self._loaded:
            why = next((r for (n, _), r in self._reasons.items() if n == name and r.startswith("load failed")), None)
            if why is not None:
                raise ServiceUnavailable(
                    f"model {name!r} is unavailable: {why}; once fixed: POST /v2/repository/models/{name}/load"
                )
        if name in self.origins.explicit or name in self.origins.scan():
            raise ModelNotFound(f"model {name!r} is not loaded: POST /v2/repository/models/{name}/load")
        raise ModelNotFound(f"unknown model {name!r}; models are {sorted(self._loaded)}")

    def _find(self, name: str, version: str | None) -> ServedModel | None:
        loaded = self._loaded.get(name)
        if not loaded:
            return None
        if version is None:
            found = self._latest.get(name)
            # Pinned all: the highest loaded. On demand: the highest there is, which may not be loaded.
            return found if found is not None or self.on_demand else loaded[latest(loaded)]
        try:
            return loaded[self.origins.resolve(name, version, loaded, "loaded versions")]
        except ModelNotFound:
            if self.on_demand:
                return None
            raise

    async def acquire(self, name: str, version: str | None) -> ServedModel:
        """The version one request runs on, loaded first when needed; give it back with :meth:`release`.

        While held, the version is never unloaded under the request (an eviction waits for it).

        Example:
            >>> served = await registry.acquire("fraud", None)   # doctest: +SKIP
            >>> try: out = await served.infer(inputs)            # doctest: +SKIP
            ... finally: registry.release(served)
        """
        served = self._find(name, version)
        if served is None:
            if not self.on_demand:
                self.get(name, version)  # raises why it is not there
            versions = self.origins.versions(name)
            served = await self._ensure(name, self.origins.resolve(name, version, versions), versions)
        served.users += 1
        self.residency.touch(served)
        return served

    def release(self, served: ServedModel) -> None:
        """A request is done with ``served`` (see :meth:`acquire`)."""
        self.residency.release(served)

    def servable(self, name: str, version: str | None) -> None:
        """ModelNotFound unless ``name`` at ``version`` is loaded or can load on demand."""
        if not self.on_demand:
            self.get(name, version)
            return
        versions = self.origins.versions(name)
        picked = self.origins.resolve(name, version, versions)
        why = self._reasons.get((name, picked), "")
        if why.startswith("load failed"):
            raise ServiceUnavailable(f"model {name!r} version {picked!r} is unavailable: {why}")

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` served: loaded ones, or on demand every loadable one."""
        if self.on_demand:
            return sorted(self.origins.scan().get(name, {}), key=version_key)
        return sorted(self._loaded.get(name, {}), key=version_key)

    def loaded(self) -> list[ServedModel]:
        """Every loaded version."""
        return [m for versions in list(self._loaded.values()) for m in versions.values()]

    def ready(self) -> bool:
        """Whether the server can answer: something is loaded, or something can load on demand."""
        return bool(self._loaded) or (self.on_demand and bool(self.origins.scan()))

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index: every model version and its state (READY / LOADING / UNAVAILABLE with a reason)."""
        default = "not loaded yet (loads on its first request)" if self.on_demand else "unloaded"
        out: list[dict[str, Any]] = []
        for name, versions in sorted(self.origins.scan().items()):
            loaded = self._loaded.get(name, {})
            for version in sorted(versions, key=version_key):
                if version in loaded:
                    out.append(documents.index_entry(name, version))
                elif ready_only:
                    continue
                elif (name, version) in self.residency.loading:
                    out.append(documents.index_entry(name, version, LOADING, "loading"))
                else:
                    reason = self._reasons.get((name, version), default)
                    out.append(documents.index_entry(name, version, documents.UNAVAILABLE, reason))
        return out

    # -- loading --------------------------------------------------------------------------------

    def _load_at_start(self) -> None:
        """Load the pinned versions (all of them unless on demand), outside any event loop."""
        for name, versions in self.origins.scan().items():
            for version in sorted(versions, key=version_key):
                src = versions[version]
                if self.on_demand and not self.origins.is_pinned(name, src, self.pinned):
                    continue
                start = time.perf_counter()
                try:
                    served, _, grown = self._build_measured(name, version, src)
                except Exception as e:
                    why = self._failed(name, version, e)
                    # One broken package (a remote host down, a framework's bare RuntimeError ...) must not
                    # stop the others. A model the caller handed in is the caller's own input: theirs to see.
                    if isinstance(src, Model) or name in self.origins.explicit:
                        raise self._typed(name, version, e, why) from e
                    continue
                served.memory = max(grown, package_bytes(src))
                self._install(served, versions, time.perf_counter() - start)
        count, used = self.residency.usage()
        if not self.budget.fits(count, used):
            raise ModelLoadError(
                f"the pinned models ({count} versions, {used} bytes) do not fit the budget ({self.budget.describe()})"
            )

    async def aload(self, name: str) -> list[str]:
        """``POST .../load``: load every version of ``name``, within the budget; returns those loaded.

        Pinned all, loaded versions load again (a new package under the same version is picked up).
        A failure answers the load error (400 for a broken package).
        """
        try:
            versions = self.origins.versions(name)
        except ModelNotFound:
            raise ModelNotFound(f"model {name!r} is not in the repository") from None
        for version in sorted(versions, key=version_key):
            await self._ensure(name, version, versions, requested=True)
        return sorted(self._loaded.get(name, {}), key=version_key)

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (requests already running finish)."""
        versions = self._loaded.get(name)
        if versions is None:
            if name not in self.origins.scan():
                raise ModelNotFound(f"model {name!r} is not in the repository")
            return
        for served in list(versions.values()):
            self._retire(served, "unloaded", eviction=False)

    def _locks(self) -> tuple[asyncio.Lock, dict[tuple[str, str], asyncio.Lock]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._load_lock is None:
            # Locks belong to one loop; a registry used from another (tests run several) starts afresh.
            self._loop, self._load_lock, self._version_locks = loop, asyncio.Lock(), {}
        return self._load_lock, self._version_locks

    async def _ensure(
        self, name: str, version: str, versions: Mapping[str, Source], *, requested: bool = False
    ) -> ServedModel:
        load_lock, version_locks = self._locks()
        async with version_locks.setdefault((name, version), asyncio.Lock()):
            # Concurrent first requests: one loads, the others find it loaded.
            found = self._loaded.get(name, {}).get(version)
            if found is not None and (self.on_demand or not requested):
                return found
            async with load_lock:  # one load at a time, so its memory growth is its own
                return await self._load(name, version, versions, requested=requested)

    async def _load(self, name: str, version: str, versions: Mapping[str, Source], *, requested: bool) -> ServedModel:
        src, key = versions[version], (name, version)
        estimate = package_bytes(src)
        residency = self.residency
        await residency.make_room(1, estimate, key)
        residency.loading[key] = estimate
        residency.count()
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
            why = self._failed(name, version, e)
            if requested:  # a load request gets the load's own error: 400 for a broken package
                raise self._typed(name, version, e, why) from e
            # Whatever the load raised (a remote's 403, a framework's RuntimeError), the request that
            # asked for the model gets one clear answer; the next request tries to load it again.
            raise ServiceUnavailable(
                f"model {name!r} version {version!r} is unavailable: {why}", retry_after=self.limits.retry_after
            ) from e
        finally:
            residency.loading.pop(key, None)
        if self.budget.memory_budget and served.memory > self.budget.memory_budget:
            for hook in self.hooks:
                hook.on_failure(name, version)
            reason = self._reasons[key] = (
                f"model {name!r} version {version!r} takes {served.memory} bytes, more than the whole memory "
                f"budget of {self.budget.memory_budget} bytes"
            )
            residency.count()
            raise ServiceUnavailable(reason, status_code=507)
        self._install(served, versions, time.perf_counter() - start)
        await residency.make_room(0, 0, key)  # it measured more than its files: trim the others
        return served

    def _build_measured(self, name: str, version: str, src: Source) -> tuple[ServedModel, int, int]:
        """The built version, the resident bytes before it and its growth (see :func:`growth_since`)."""
        # What evicted models held goes now, not in the middle of the measurement (a full collection
        # costs ms to tens of ms: only when something was evicted since the last one).
        release_memory(collect=self.residency.evicted_since_collect)
        self.residency.evicted_since_collect = False
        before = resident_bytes()
        model = src if isinstance(src, Model) else Model.load(src, options=self.model_options)
        # A Model handed in is served as it is; the server's threads per call go to what it loads itself.
        batching = dataclasses.replace(self.batching, threads_per_call=0) if src is model else self.batching
        served = ServedModel(
            name,
            version,
            model,
            batching=batching,
            executor=self.executor,
            metrics=self.metrics.model(name, version),
            limits=self.limits,
        )
        served.pinned = not self.on_demand or self.origins.is_pinned(name, src, self.pinned)
        for hook in self.hooks:  # warm-up and monitors: inside the measurement
            hook.on_load(served, src)
        # Count what the model keeps, not the file bytes and parse buffers its load freed.
        return served, before, growth_since(before, collect=False)

    def _failed(self, name: str, version: str, error: BaseException) -> str:
        """Log a failed load with a short redacted reason, note it (index, answers) and return it."""
        why = self._reasons[(name, version)] = f"load failed: {redaction.reason(error)}"
        log.error("model %r version %r is UNAVAILABLE: %s", name, version, why)
        for hook in self.hooks:
            hook.on_failure(name, version)
        return why

    @staticmethod
    def _typed(name: str, version: str, error: Exception, why: str) -> Exception:
        # Typed, so a load request answers 400 with the short reason, not a 500 traceback.
        return error if isinstance(error, AimassError) else ModelLoadError(f"model {name!r} version {version!r}: {why}")

    def _install(self, served: ServedModel, versions: Mapping[str, Source], seconds: float) -> None:
        name, version = served.name, served.version
        self.residency.touch(served)
        with self._lock:
            self._loaded.setdefault(name, {})[version] = served  # a reload replaces; running requests finish
            if version == latest(versions):
                self._latest[name] = served
        self._reasons.pop((name, version), None)
        for hook in self.hooks:
            hook.on_ready(served, seconds)
        self.residency.count()

    def _evict(self, served: ServedModel, reason: str) -> None:
        self._retire(served, reason, eviction=True)

    def _retire(self, served: ServedModel, reason: str, *, eviction: bool) -> None:
        """Take a version out of service: freed now, or drained when requests hold it."""
        with self._lock:
            versions = self._loaded.get(served.name, {})
            versions.pop(served.version, None)
            if not versions:
                self._loaded.pop(served.name, None)
            if self._latest.get(served.name) is served:
                self._latest.pop(served.name)
        self._reasons[(served.name, served.version)] = reason
        for hook in self.hooks:
            hook.on_unload(served, eviction=eviction)
        self.residency.retired(served)

    def _counted(self, versions: int, used: int) -> None:
        for hook in self.hooks:
            hook.on_count(versions, used)
