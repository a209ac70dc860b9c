"""The server's core parts on their own: sources (discovery, the one alias resolution), the registry's
one load path with its hooks, pinning everything without a budget, and eviction under one.

Real ONNX models written by tests/models.py, loaded by onnxruntime; no HTTP.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model
from aimass.errors import ModelNotFound
from aimass.server.budget import Budget
from aimass.server.hooks import Hook, LifecycleHook
from aimass.server.metrics import Metrics
from aimass.server.registry import Registry
from aimass.server.served import ServedModel
from aimass.server.sources import Source, Sources
from aimass.store import Store

X = np.ones((2, 4), np.float32)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model library: 'a' versions 1 and 2 (alias 'production' -> 1), 'b' version 1, and a staging dir."""
    root = tmp_path_factory.mktemp("library")
    work = tmp_path_factory.mktemp("onnx")
    store = Store(root)
    for name, seeds in (("a", (0, 1)), ("b", (2,))):
        for seed in seeds:
            store.publish(Model.load(models.onnx_mlp(work / f"{name}{seed}.onnx", seed=seed)), name)
    store.set_alias("a", "production", 1)
    (root / "a" / ".staging-x").mkdir()  # an unfinished publish: never served
    return root


class Recorder(Hook):
    """Records what the registry tells its hooks, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_load(self, served: ServedModel, source: Source) -> None:
        self.events.append(("load", served.name, served.version, isinstance(source, Path)))

    def on_ready(self, served: ServedModel, seconds: float) -> None:
        assert seconds >= 0 and served.memory > 0  # measured before it serves
        self.events.append(("ready", served.name, served.version))

    def on_unload(self, served: ServedModel, *, eviction: bool) -> None:
        self.events.append(("unload", served.name, served.version, eviction))


def _registry(root: Path, hook: Hook, budget: Budget | None = None) -> Registry:
    metrics = Metrics()
    return Registry(
        Sources(root),
        executor=ThreadPoolExecutor(2),
        metrics=metrics,
        budget=budget,
        hooks=[hook, LifecycleHook(metrics)],
    )


def test_sources_scan_and_resolve_versions_and_aliases_in_one_place(library: Path) -> None:
    sources = Sources(library)
    found = sources.scan()
    assert {n: sorted(v) for n, v in found.items()} == {"a": ["1", "2"], "b": ["1"]}  # no .staging-x
    assert sources.resolve("a", None, ["1", "2", "10"]) == "10"  # numeric order, not text order
    assert sources.resolve("a", "production", found["a"]) == "1"
    with pytest.raises(ModelNotFound, match=r"model 'a' has no version 'staging'; versions are \['1', '2'\]"):
        sources.resolve("a", "staging", found["a"])
    with pytest.raises(ModelNotFound, match=r"unknown model 'zz'; models are \['a', 'b'\]"):
        sources.versions("zz")


def test_without_a_budget_every_version_is_pinned_and_loads_at_start(library: Path) -> None:
    hook = Recorder()
    registry = _registry(library, hook)
    assert not registry.on_demand
    assert [e for e in hook.events if e[0] == "ready"] == [
        ("ready", "a", "1"),
        ("ready", "a", "2"),
        ("ready", "b", "1"),
    ]
    assert all(s.pinned for s in registry.loaded())
    assert registry.get("a", None).version == "2" and registry.get("a", "production").version == "1"
    registry.unload("a")
    assert ("unload", "a", "2", False) in hook.events
    with pytest.raises(ModelNotFound, match="is not loaded: POST /v2/repository/models/a/load"):
        registry.get("a", None)

    async def reload() -> None:
        assert await registry.aload("a") == ["1", "2"]
        served = await registry.acquire("a", "production")
        try:
            out = await served.infer({"x": X})
        finally:
            registry.release(served)
        assert out["y"].shape == (2, 3)

    asyncio.run(reload())


def test_under_a_budget_versions_load_on_demand_and_the_least_recent_goes(library: Path) -> None:
    hook = Recorder()
    registry = _registry(library, hook, Budget(max_loaded_models=1))
    assert registry.on_demand and registry.loaded() == [] and hook.events == []

    async def traffic() -> None:
        for name in ("a", "b", "a"):
            served = await registry.acquire(name, None)
            registry.release(served)

    asyncio.run(traffic())
    assert hook.events[:2] == [("load", "a", "2", True), ("ready", "a", "2")]
    assert ("unload", "a", "2", True) in hook.events and ("unload", "b", "1", True) in hook.events
    assert [s.name for s in registry.loaded()] == ["a"] and registry.peak_loaded == 1
    index = {(e["name"], e["version"]): e for e in registry.index()}
    assert index[("b", "1")]["state"] == "UNAVAILABLE" and "evicted" in index[("b", "1")]["reason"]
    assert "not loaded yet" in index[("a", "1")]["reason"]
