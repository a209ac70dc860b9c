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
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from aimass.batching import Batcher, Placement
from aimass.errors import ModelLoadError, ModelNotFound, ServiceUnavailable
from aimass.metrics import Metrics, ModelMetrics
from aimass.model import Model
from aimass.package import is_package
from aimass.protocol import documents

__all__ = ["BatchingConfig", "Limits", "Repository", "ServedModel", "version_key"]

log = logging.getLogger("aimass.server")

Source = Model | Path


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numeric versions in numeric order, after non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


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

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate (SchemaError names the tensor) and run, batched when batching is on.

        Raises ServiceUnavailable: 503 when ``max_queue_size`` requests are already held, 504 past
        ``request_timeout``.
        """
        ready = self._coerce(inputs)
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
        out: dict[str, np.ndarray] = await self.placement.call(self._timed, ready)
        return out

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
    version -> source. Everything found is loaded at construction, with ``model_options`` passed
    to the backends (e.g. ``{"session_options": {"intra_op_num_threads": 1}}`` for onnx).

    Example:
        >>> repo = Repository(models={"mlp": Model.load("mlp.onnx")})   # doctest: +SKIP
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
    ) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ModelLoadError(f"model repository {str(self.root)!r} is not a directory")
        self.batching = batching or BatchingConfig()
        self.limits = limits or Limits()
        self.model_options = dict(model_options) if model_options else None
        self.executor = executor
        self.metrics = metrics
        self._explicit: dict[str, dict[str, Source]] = {}
        for name, src in (models or {}).items():
            versions = src if isinstance(src, Mapping) else {"1": src}
            self._explicit[name] = {str(v): s if isinstance(s, Model) else Path(s) for v, s in versions.items()}
        self._loaded: dict[str, dict[str, ServedModel]] = {}
        self._latest: dict[str, ServedModel] = {}
        self._errors: dict[str, str] = {}
        self._aliases: dict[str, tuple[int, dict[str, dict[int, float]]]] = {}
        self._lock = threading.Lock()
        for name in self.sources():
            try:
                self.load(name)
            except ModelLoadError as e:
                if name in self._explicit:
                    raise
                log.error("model %r not loaded: %s", name, e)

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

    def load(self, name: str) -> list[str]:
        """(Re)load every version of ``name``; returns the versions now loaded."""
        versions = self.sources().get(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not in the repository")
        served: dict[str, ServedModel] = {}
        try:
            for version, src in versions.items():
                model = src if isinstance(src, Model) else Model.load(src, options=self.model_options)
                served[version] = ServedModel(
                    name,
                    version,
                    model,
                    batching=self.batching,
                    executor=self.executor,
                    metrics=self.metrics.model(name, version),
                    limits=self.limits,
                )
        except ModelLoadError as e:
            self._errors[name] = str(e)
            raise
        with self._lock:
            self._loaded[name] = served
            self._latest[name] = served[max(served, key=version_key)]
            self._errors.pop(name, None)
        return sorted(served, key=version_key)

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (requests already running finish)."""
        with self._lock:
            if self._loaded.pop(name, None) is None:
                if name not in self.sources():
                    raise ModelNotFound(f"model {name!r} is not in the repository")
                return
            self._latest.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------

    def get(self, name: str, version: str | None) -> ServedModel:
        """The loaded model ``name`` at ``version`` (None: the highest); ModelNotFound otherwise."""
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

    def versions(self, name: str) -> list[str]:
        return sorted(self._loaded.get(name, {}), key=version_key)

    def loaded(self) -> list[ServedModel]:
        return [m for versions in list(self._loaded.values()) for m in versions.values()]

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index: every model version and its state (READY / UNAVAILABLE)."""
        out: list[dict[str, Any]] = []
        for name, versions in sorted(self.sources().items()):
            loaded = self._loaded.get(name, {})
            for version in sorted(versions, key=version_key):
                if version in loaded:
                    out.append(documents.index_entry(name, version))
                elif not ready_only:
                    reason = self._errors.get(name, "unloaded")
                    out.append(documents.index_entry(name, version, documents.UNAVAILABLE, reason))
        return out
