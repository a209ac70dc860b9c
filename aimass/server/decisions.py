"""Where a policy's decisions go: the model's event timeline in the library, and a counter.

Every decision a policy takes (:mod:`aimass.server.canary`, :mod:`aimass.server.drift_update`) is
one :class:`~aimass.store.events.Event`, appended once per decision key to
``<library>/<name>/events.jsonl`` (:func:`aimass.store.events.append_event`) and counted in
``aimass_policy_decisions_total`` (labels ``model``, ``alias``, ``kind``, ``action``, ``dry_run``).

Example:
    >>> rec = Decisions(Store("library/"), registry=metrics.registry)                        # doctest: +SKIP
    >>> rec.record(Event(model="fraud", kind="canary", action="rollback", decision="k"))     # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from typing import Any

from aimass.store import Store
from aimass.store.events import Event, append_event, read_events

__all__ = ["Decisions"]

log = logging.getLogger("aimass.server")


class Decisions:
    """Records decisions (exactly once per key) and counts them.

    Example:
        >>> Decisions(Store("library/")).events("fraud")   # doctest: +SKIP
        []
    """

    def __init__(self, store: Store, *, registry: Any = None) -> None:
        self.store = store
        self._counter: Any = None
        if registry is not None:
            from prometheus_client import Counter

            self._counter = Counter(
                "aimass_policy_decisions",
                "Decisions taken by monitoring policies (canary analysis, drift-triggered update).",
                ("model", "alias", "kind", "action", "dry_run"),
                registry=registry,
            )

    def record(self, event: Event) -> bool:
        """Append ``event`` to its model's timeline; False when its decision was recorded before."""
        fresh = append_event(self.store, event)
        if fresh:
            level = logging.INFO if not event.dry_run else logging.DEBUG
            log.log(level, "policy %s on %s: %s (%s)", event.kind, event.model, event.action, event.reason)
            if self._counter is not None:
                labels = (event.model, event.alias or "", event.kind, event.action, str(event.dry_run).lower())
                self._counter.labels(*labels).inc()
        return fresh

    def events(self, name: str) -> list[Event]:
        """The timeline of ``name``, oldest first."""
        return read_events(self.store, name)
