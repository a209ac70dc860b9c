"""The decisions taken about a model, kept with it in the library: ``<root>/<name>/events.jsonl``.

One JSON object a line, oldest first, one line per decision a policy took (or, in dry-run mode,
would have taken): what was measured, the thresholds it was held against, and what was done. A
canary stepped up, promoted or rolled back, a drift that stayed over its threshold, an update
refused by its gate or published: each is an :class:`Event` (:mod:`aimass.server.policies`).

Appends are atomic and exactly-once per decision: under the model's library lock the file is read,
an event whose ``decision`` key is already there is not written again (two workers, or a server
restarted after it recorded a decision, do not record or act on it twice), and the new file
replaces the old in one step (a rename locally, one PUT on object stores), so a reader sees the
timeline before or after the append, never half a line.

Example:
    >>> from aimass.store import Store
    >>> from aimass.store.events import Event, append_event, read_events
    >>> lib = Store("/tmp/models")                                                   # doctest: +SKIP
    >>> append_event(lib, Event(model="fraud", kind="canary", action="rollback", decision="k1"))  # doctest: +SKIP
    True
    >>> [e.action for e in read_events(lib, "fraud")]                                # doctest: +SKIP
    ['rollback']
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pydantic

from aimass.errors import StoreError
from aimass.store.refs import check_name

if TYPE_CHECKING:
    from aimass.store.library import Store

__all__ = ["EVENTS", "Event", "append_event", "read_events"]

EVENTS = "events.jsonl"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Event(pydantic.BaseModel):
    """One decision about a model: what was measured, against which thresholds, and what was done.

    ``decision`` is the idempotency key: the same decision is recorded (and acted on) once.

    Example:
        >>> e = Event(model="fraud", alias="production", kind="canary", action="rollback", version=4,
        ...           measured={"error_rate_delta": 0.3}, thresholds={"max_error_rate_delta": 0.01},
        ...           decision="canary:fraud@production:4:rollback")
        >>> e.action, e.dry_run
        ('rollback', False)
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    time: str = pydantic.Field(default_factory=_now)
    model: str
    alias: str | None = None
    kind: str  # the policy that decided: "canary", "drift"
    action: str  # what it did: "step", "promote", "rollback", "drifted", "refused", "publish", ...
    version: int | None = None  # the version acted on (the canary, the new version)
    weights: dict[str, float] | None = None  # the alias's weights the action set, by version
    measured: dict[str, float | int | None] = {}
    thresholds: dict[str, float | int | None] = {}
    reason: str = ""
    dry_run: bool = False
    decision: str

    def line(self) -> bytes:
        """The event as one JSON line."""
        return self.model_dump_json().encode() + b"\n"


def read_events(store: Store, name: str) -> list[Event]:
    """Every event recorded for ``name``, oldest first (empty when none were).

    Example:
        >>> read_events(Store("/tmp/models"), "fraud")   # doctest: +SKIP
        []
    """
    raw = store.driver.read(check_name(name), EVENTS)
    return _parse(raw or b"", name)


def append_event(store: Store, event: Event) -> bool:
    """Record ``event``; False (nothing written) when its ``decision`` was recorded already.

    Example:
        >>> append_event(lib, Event(model="fraud", kind="canary", action="step", decision="k2"))   # doctest: +SKIP
        True
    """
    name = check_name(event.model)
    driver = store.driver
    with driver.lock(name):
        raw = driver.read(name, EVENTS) or b""
        if any(e.decision == event.decision for e in _parse(raw, name)):
            return False
        if raw and not raw.endswith(b"\n"):
            raw += b"\n"
        driver.write_atomic(name, EVENTS, raw + event.line())
    return True


def _parse(raw: bytes, name: str) -> list[Event]:
    out = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Event.model_validate_json(line))
        except pydantic.ValidationError as e:
            first: dict[str, Any] = dict(e.errors()[0])
            raise StoreError(f"{name}/{EVENTS} line {number}: not an event ({first.get('msg', 'invalid')})") from None
    return out
