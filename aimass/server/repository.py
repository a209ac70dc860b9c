"""The models a server holds, wired together: where they come from, which are loaded, what runs as they load.

A :class:`Repository` is a :class:`~aimass.server.registry.Registry` over
:class:`~aimass.server.sources.Sources` (a repository directory ``<root>/<name>/<version>/`` and/or
explicit models) with the server's hooks (:mod:`aimass.server.hooks`): warm-up, served-traffic
monitors and lifecycle metrics. The parts, and the path of a request through them, are drawn in
docs/architecture.md.

Example:
    >>> repo = Repository(root="models/", executor=pool, metrics=Metrics())     # doctest: +SKIP
    >>> repo.get("fraud", None).version                                          # doctest: +SKIP
    '3'
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from aimass.server.budget import Budget
from aimass.server.hooks import MONITOR_MODES, Hook, LifecycleHook, MonitorHook, WarmupHook
from aimass.server.metrics import Metrics
from aimass.server.monitoring import ServedMonitor
from aimass.server.registry import LOADING, Registry
from aimass.server.served import BatchingConfig, Limits, ServedModel
from aimass.server.sources import ModelSources, Source, Sources
from aimass.server.versions import version_key

__all__ = ["LOADING", "MONITOR_MODES", "BatchingConfig", "Budget", "Limits", "Repository", "ServedModel", "version_key"]


class Repository(Registry):
    """Sources of models (a repository directory and/or explicit models) and the loaded versions.

    ``models`` maps a name to a ``Model`` or a path (model file or package), or to a mapping of
    version -> source. Without a ``budget`` every version is pinned and loads at construction;
    with one (``max_loaded_models`` and/or ``memory_budget``) versions load on demand and the least
    recently used go first (:mod:`aimass.server.registry`, :mod:`aimass.server.budget`).
    ``warmup`` runs one warm-up call per version as it loads (:mod:`aimass.server.warmup`).
    ``monitor``: ``"auto"`` feeds a :class:`~aimass.server.monitoring.ServedMonitor` from every
    request of a version whose package carries a reference profile, ``"all"`` for every version,
    ``"off"`` for none.

    Example:
        >>> repo = Repository(models={"mlp": Model.load("mlp.onnx")}, executor=pool, metrics=m)   # doctest: +SKIP
        >>> repo = Repository("lib/", budget=Budget(max_loaded_models=3), executor=pool, metrics=m)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        models: ModelSources | None = None,
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
        self.monitoring = MonitorHook(monitor, registry=metrics.registry)
        hooks: list[Hook] = [WarmupHook()] if warmup else []
        hooks += [self.monitoring, LifecycleHook(metrics)]
        super().__init__(
            Sources(root, models),
            executor=executor,
            metrics=metrics,
            batching=batching,
            model_options=model_options,
            limits=limits,
            budget=budget,
            pinned=pinned,
            hooks=hooks,
        )

    @property
    def root(self) -> Path | None:
        """The repository directory, if any."""
        return self.origins.root

    @property
    def lazy(self) -> bool:
        """Whether versions load on demand (under a budget) rather than all at start."""
        return self.on_demand

    @property
    def monitors(self) -> dict[tuple[str, str], ServedMonitor]:
        """The served-traffic monitors by (name, version)."""
        return self.monitoring.monitors

    def sources(self) -> dict[str, dict[str, Source]]:
        """Every model this repository can load: name -> version -> source (directory rescanned)."""
        return self.origins.scan()

    def monitor_report(self, name: str, version: str | None) -> dict[str, Any]:
        """The JSON report of a served version's monitor (:meth:`ServedMonitor.report`)."""
        versions = self.origins.versions(name)
        return self.monitoring.report(name, self.origins.resolve(name, version, versions))
