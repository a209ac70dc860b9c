"""Monitoring that acts: the policy file a user writes, and the server task that runs it.

A policy file (YAML or JSON) declares, per alias, a canary analysis (:mod:`aimass.server.canary`)
and/or a drift-triggered update (:mod:`aimass.server.drift_update`); nothing acts without one::

    interval: 5                 # seconds between two looks
    canary:
      - model: fraud
        alias: production
        window: 300             # seconds each weight is held and compared
        steps: [0.1, 0.25, 0.5]
        max_error_rate_delta: 0.01
        max_latency_ratio: 1.5
        min_agreement: 0.95     # with a shadow rule mirroring the alias to the canary
    drift:
      - model: fraud
        alias: production
        labels: /data/fraud-labels.csv
        threshold: 0.25
        window: 3600
        max_drop: 0.0
        update: {rounds: 30}

:class:`PolicyRunner` runs it inside the server, started and stopped with the app's lifespan: canary
analyses every ``interval`` seconds, drift checks in a task of their own (an update trains for a
while; the canaries are watched meanwhile). Each look runs in a worker thread. With several
worker processes each one runs it on its own traffic; a decision is recorded (and acted on) once,
by whichever takes it first (:mod:`aimass.server.decisions`).

Example:
    >>> policies = load_policies("policies.yaml")                            # doctest: +SKIP
    >>> app = create_app(repository="library/", policies=policies)           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from aimass.errors import StoreError
from aimass.files import parse_json
from aimass.server.canary import CanaryAnalysis, CanaryPolicy
from aimass.server.decisions import Decisions
from aimass.server.drift_update import DriftPolicy, DriftUpdate
from aimass.server.metrics import canary_gauges
from aimass.store import Store
from aimass.store.events import Event

if TYPE_CHECKING:
    from aimass.server.repository import Repository

__all__ = ["Policies", "PolicyRunner", "load_policies"]

log = logging.getLogger("aimass.server")


class Policies(pydantic.BaseModel):
    """What a server may do on its own: canary analyses and drift-triggered updates, per alias.

    Example:
        >>> Policies(canary=[{"model": "fraud", "alias": "production"}]).canary[0].window
        60.0
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    interval: float = pydantic.Field(5.0, gt=0, description="seconds between two looks")
    canary: list[CanaryPolicy] = []
    drift: list[DriftPolicy] = []


def load_policies(path: str | os.PathLike[str]) -> Policies:
    """Read a policy file (``.yaml``/``.yml`` or ``.json``); StoreError naming the file and the bad field.

    Relative ``labels`` and ``payload_log`` paths are taken relative to the file's directory.

    Example:
        >>> load_policies("policies.yaml").canary[0].alias   # doctest: +SKIP
        'production'
    """
    file = Path(path)
    raw = file.read_bytes()
    if file.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise StoreError(f"policy file {file.name!r} is not valid YAML: {e}") from None
    else:
        data = parse_json(raw, file.name, StoreError)
    try:
        policies = Policies.model_validate(data or {})
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StoreError(f"policy file {file.name!r}: {where}: {first['msg']}") from None
    # Relative paths in the file are relative to the file, wherever the server starts.
    for drift in policies.drift:
        for field in ("labels", "payload_log"):
            value = getattr(drift, field)
            if value and "://" not in value and not Path(value).is_absolute():
                setattr(drift, field, str(file.parent / value))
    return policies


class PolicyRunner:
    """Runs a server's :class:`Policies` against its repository (a model library) and metrics.

    ``clock`` is injectable (tests step through windows); :meth:`tick` is one look at everything.

    Example:
        >>> runner = PolicyRunner(policies, app.repository, registry=app.metrics.registry)   # doctest: +SKIP
        >>> await runner.tick()                                                                # doctest: +SKIP
        []
    """

    def __init__(
        self,
        policies: Policies,
        repository: Repository,
        *,
        registry: Any,
        store: Store | None = None,
        payload_log: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if store is None:
            if repository.root is None:
                raise ValueError("monitoring policies act on a model library: serve one (repository=...)")
            store = Store(repository.root)
        self.policies = policies
        self.repository = repository
        self.decisions = Decisions(store, registry=registry)
        gauges = canary_gauges(registry) if policies.canary else None
        self.canaries = [
            CanaryAnalysis(p, self.decisions, registry=registry, clock=clock, gauges=gauges) for p in policies.canary
        ]
        self.updates = [
            DriftUpdate(p, self.decisions, repository, payload_log=payload_log, clock=clock) for p in policies.drift
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def tick(self) -> list[Event]:
        """One look at every policy (canaries first), each in a worker thread; the events recorded."""
        return [*await self.tick_canaries(), *await self.tick_updates()]

    async def tick_canaries(self) -> list[Event]:
        return await _each([a.tick for a in self.canaries])

    async def tick_updates(self) -> list[Event]:
        loop = asyncio.get_running_loop()

        def load(name: str) -> None:  # from the worker thread a drift tick runs in: the loop does the load
            asyncio.run_coroutine_threadsafe(self.repository.aload(name), loop).result()

        for u in self.updates:
            u.loader = load
        return await _each([u.tick for u in self.updates])

    @property
    def running(self) -> bool:
        """Whether the background looks are started (between the app's startup and its shutdown)."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start the background looks (from the event loop: the app's lifespan startup)."""
        loop = asyncio.get_running_loop()
        for look in (self.tick_canaries, self.tick_updates):
            self._tasks.append(loop.create_task(self._every(look)))

    async def stop(self) -> None:
        """Stop them (lifespan shutdown); a look in progress finishes in its thread."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _every(self, look: Callable[[], Awaitable[list[Event]]]) -> None:
        while True:
            await look()
            await asyncio.sleep(self.policies.interval)


async def _each(ticks: Sequence[Callable[[], list[Event]]]) -> list[Event]:
    loop = asyncio.get_running_loop()
    out: list[Event] = []
    for tick in ticks:
        try:
            out += await loop.run_in_executor(None, tick)
        except Exception:  # one policy's failure (a labels file mid-write, a store hiccup) must not stop the others
            log.exception("monitoring policy failed; it runs again at the next look")
    return out
