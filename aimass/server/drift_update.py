"""Drift-triggered incremental update: when served inputs drift and labels arrive, train, gate, publish, canary.

Opt-in, per alias, by a :class:`DriftPolicy` the user writes. The alias's version is served with
a monitor (its package carries a reference profile: ``publish(..., reference=rows)``). When the
largest input PSI of that monitor stays above ``threshold`` for ``window`` seconds, and the labels
file the policy names holds at least ``min_rows`` labels for logged requests (payload logs,
:mod:`aimass.server.payload_log`, joined by ``request_id`` and ``row``), the server:

1. splits the labelled rows into training rows and ``holdout`` held-out rows (seeded);
2. trains an update of the served version on a copy (:func:`aimass.update.update`, options from
   ``update``, e.g. ``{"rounds": 30}`` for XGBoost), in a worker thread;
3. evaluates the served version and the update on the held-out rows (``metric``): the update is
   refused when it is worse by more than ``max_drop`` or fails ``gate`` (``{"accuracy": ">=0.9"}``);
4. publishes it as a new version (the held-out metrics recorded, the training rows as its
   reference profile) and starts it as a canary at ``canary_weight``: the alias's
   :class:`~aimass.server.canary.CanaryPolicy` then steps it up and promotes it, or rolls it back.

Each step is an event in the model's timeline (``drifted``, ``refused``, ``publish``, ``canary``;
``no-labels`` while too few labels have arrived; with ``dry_run`` only ``drifted`` and
``would-update``). A decision is keyed by the served version and the labels file's content, so a
restart does not train or publish twice for the same labels (an update published but not yet
recorded is found again by its ``aimass.decision`` tag).

The labels file is CSV, Parquet or JSON lines (by its suffix) with columns ``request_id``,
``label`` and, when requests carry several rows, ``row`` (without it, every row of a request gets
the request's label).

Example:
    >>> DriftPolicy(model="fraud", alias="production", labels="labels.csv", threshold=0.2, window=3600).metric
    'accuracy'
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydantic

from aimass.dependencies import require
from aimass.errors import ModelNotFound, StoreError
from aimass.evaluate import REGRESSION_METRICS, check_gate, evaluate, parse_gate
from aimass.server.decisions import Decisions
from aimass.server.payload_log import read_payloads
from aimass.store.events import Event

if TYPE_CHECKING:
    from aimass.server.repository import Repository

__all__ = ["DriftPolicy", "DriftUpdate", "read_labels"]

KIND = "drift"
DECISION_TAG = "aimass.decision"
_LOWER_IS_BETTER = frozenset(m for m in REGRESSION_METRICS if m != "r2")


class DriftPolicy(pydantic.BaseModel):
    """When and how an alias's model is updated on drifted, labelled traffic.

    Example:
        >>> DriftPolicy(model="fraud", labels="labels.csv", max_drop=0.0, update={"rounds": 30}).alias
        'production'
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    model: str
    alias: str = "production"
    labels: str = pydantic.Field(description="labels file: request_id, [row,] label (CSV, Parquet, JSON lines)")
    payload_log: str | None = pydantic.Field(None, description="payload log directory; default: the server's")
    threshold: float = pydantic.Field(0.25, gt=0, description="largest input PSI that counts as drift")
    window: float = pydantic.Field(3600.0, gt=0, description="seconds the drift must last")
    min_rows: int = pydantic.Field(200, ge=2)
    holdout: float = pydantic.Field(0.3, gt=0, lt=1)
    metric: str = "accuracy"
    max_drop: float = pydantic.Field(0.0, description="how much worse than the served version the update may be")
    gate: dict[str, str] = {}
    update: dict[str, Any] = {}
    canary_weight: float = pydantic.Field(0.1, gt=0, lt=1)
    seed: int = 0
    dry_run: bool = False

    @pydantic.field_validator("gate")
    @classmethod
    def _gate(cls, gate: dict[str, str]) -> dict[str, str]:
        parse_gate(gate)  # a malformed condition is refused when the policy is read
        return gate


@dataclasses.dataclass
class _Drift:
    version: int
    since: float


class DriftUpdate:
    """Runs one :class:`DriftPolicy`: :meth:`tick` (in a worker thread: it may train) every few seconds.

    Example:
        >>> DriftUpdate(policy, decisions, repository, payload_log="logs/").tick()   # doctest: +SKIP
        []
    """

    def __init__(
        self,
        policy: DriftPolicy,
        decisions: Decisions,
        repository: Repository,
        *,
        payload_log: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.decisions = decisions
        self.store = decisions.store
        self.repository = repository
        self.payload_log = policy.payload_log or payload_log
        self.clock = clock
        self.drift: _Drift | None = None
        # Loads a model's versions in the server (the runner hands its event loop's aload in).
        self.loader: Callable[[str], None] | None = None

    def tick(self) -> list[Event]:
        """Measure drift once; past the window, take the next step. The events recorded (usually none)."""
        p = self.policy
        try:
            weights = self.store.alias(p.model, p.alias)
        except ModelNotFound:
            return []
        if len(weights) != 1:  # a canary is being analysed: no update on top of it
            self.drift = None
            return []
        (version,) = weights
        monitor = self.repository.monitors.get((p.model, str(version)))
        if monitor is None:
            return []
        report = monitor.report()
        psis = [(f["psi"], f["feature"]) for f in report["features"] if _finite(f.get("psi"))]
        psi, feature = max(psis, default=(0.0, ""))
        now = self.clock()
        if psi <= p.threshold:
            self.drift = None
            return []
        if self.drift is None or self.drift.version != version:
            self.drift = _Drift(version, now)
            return []
        if now - self.drift.since < p.window:
            return []
        measured: dict[str, float | int | None] = {
            "psi": float(psi),
            "seconds_over": now - self.drift.since,
            "window_rows": report.get("window_rows"),
        }
        return self._act(version, feature, measured)

    def _act(self, version: int, feature: str, measured: dict[str, float | int | None]) -> list[Event]:
        p = self.policy
        labels = Path(p.labels)
        fingerprint = hashlib.sha256(labels.read_bytes()).hexdigest()[:16] if labels.is_file() else "none"
        key = f"{KIND}:{p.model}@{p.alias}:{version}:{fingerprint}"
        timeline = self.decisions.events(p.model)
        done = {e.decision for e in timeline if e.decision.startswith(key)}
        if {f"{key}:publish", f"{key}:refused", f"{key}:would-update"} & done:
            return []  # these labels were acted on already (by this server before a restart, or another)
        events: list[Event] = []
        thresholds: dict[str, float | int | None] = {"threshold": p.threshold, "window": p.window}
        why = f"input {feature!r} PSI {measured['psi']:.3g} above {p.threshold:g} for {p.window:g} s"
        # One drift episode per served version until an update is refused (then drift must last again).
        prefix = f"{KIND}:{p.model}@{p.alias}:{version}:"
        episode = sum(1 for e in timeline if e.decision.startswith(prefix) and e.action == "refused")
        drifted = self._event("drifted", f"{prefix}episode-{episode}", version, measured, thresholds, why)
        if self.decisions.record(drifted):
            events.append(drifted)
        joined = self._labelled(labels)
        rows = 0 if joined is None else len(joined[1])
        if rows < p.min_rows:
            counts = {**measured, "labelled_rows": rows}
            note = f"{rows} labelled rows of logged requests, fewer than min_rows {p.min_rows}: waiting for labels"
            waiting = self._event("no-labels", key, version, counts, {"min_rows": p.min_rows}, note)
            if self.decisions.record(waiting):
                events.append(waiting)
            return events
        if p.dry_run:
            note = f"would train an update of version {version} on {rows} labelled rows, gate it and canary it"
            would = self._event("would-update", key, version, {"labelled_rows": rows}, thresholds, note)
            self.decisions.record(would)
            return [*events, would]
        assert joined is not None
        return events + self._update(version, key, *joined)

    def _update(self, version: int, key: str, inputs: dict[str, np.ndarray], y: np.ndarray) -> list[Event]:
        p = self.policy
        candidate_version = self._published(key)
        if candidate_version is None:
            order = np.random.default_rng(p.seed).permutation(len(y))
            cut = max(1, round(len(y) * p.holdout))
            held, train = order[:cut], order[cut:]
            # The served version, as the server loads it (Python models only when it trusts code).
            trust = bool((self.repository.model_options or {}).get("trust_code", False))
            current = self.store.load(p.model, version, trust_code=trust)
            candidate = current.update({k: v[train] for k, v in inputs.items()}, y[train], **p.update)
            x_held = {k: v[held] for k, v in inputs.items()}
            before = evaluate(current, x_held, y[held], metrics=[p.metric])[p.metric]
            result = evaluate(candidate, x_held, y[held], metrics=[p.metric])
            after = result[p.metric]
            drop = (after - before) if p.metric in _LOWER_IS_BETTER else (before - after)
            failures = check_gate(result.metrics, p.gate) if p.gate else []
            if drop > p.max_drop:
                failures.insert(0, f"{p.metric} {after:.4g} is {drop:.4g} worse than the served {before:.4g}")
            measured: dict[str, float | int | None] = {
                f"{p.metric}_served": before,
                f"{p.metric}_update": after,
                "drop": drop,
                "train_rows": len(train),
                "holdout_rows": len(held),
            }
            thresholds: dict[str, float | int | None] = {"max_drop": p.max_drop}
            if failures:
                why = "update refused: " + "; ".join(failures)
                refused = self._event("refused", key, version, measured, thresholds, why)
                self.decisions.record(refused)
                self.drift = None  # drift must last another window (and new labels come) before the next try
                return [refused]
            tags = {DECISION_TAG: key, "trigger": "drift", "from_version": version}
            train_inputs = {k: v[train] for k, v in inputs.items()}
            reference = next(iter(train_inputs.values())) if len(train_inputs) == 1 else train_inputs
            candidate_version = self.store.publish(candidate, p.model, metrics=result, tags=tags, reference=reference)
            why = (
                f"update of version {version} passed its gate on {len(held)} held-out rows: version {candidate_version}"
            )
            published = self._event("publish", key, candidate_version, measured, thresholds, why)
        else:
            why = f"version {candidate_version} was published for these labels before a restart"
            published = self._event("publish", key, candidate_version, {}, {}, why)
        events = [published] if self.decisions.record(published) else []
        target = {version: 1 - p.canary_weight, candidate_version: p.canary_weight}
        why = f"version {candidate_version} starts as a canary of {p.alias!r} at weight {p.canary_weight:g}"
        canary = self._event("canary", key, candidate_version, {}, {"canary_weight": p.canary_weight}, why)
        canary.weights = {str(v): w for v, w in sorted(target.items())}
        self.decisions.record(canary)
        if not self.repository.lazy and self.loader is not None:
            self.loader(p.model)  # a server that loads every version at start loads the new one before it is drawn
        self.store.set_alias(p.model, p.alias, target)
        self.drift = None
        return [*events, canary]

    def _published(self, key: str) -> int | None:
        """A version already published for this decision (the server stopped before recording it)."""
        for v in reversed(self.store.versions(self.policy.model)):
            if self.store.info(self.policy.model, v).tags.get(DECISION_TAG) == key:
                return v
        return None

    def _labelled(self, labels: Path) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        if not labels.is_file() or self.payload_log is None:
            return None
        try:
            logged = read_payloads(self.payload_log, model=self.policy.model)
        except StoreError:
            return None  # no complete log file yet
        table = read_labels(labels)
        if "row" in table:
            by_key = dict(zip(zip(table["request_id"], table["row"], strict=True), table["label"], strict=True))
            found = [by_key.get((str(r), int(i))) for r, i in zip(logged.request_ids, logged.rows, strict=True)]
        else:
            by_id = dict(zip(table["request_id"], table["label"], strict=True))
            found = [by_id.get(str(r)) for r in logged.request_ids]
        mask = np.array([f is not None for f in found], dtype=bool)
        if not mask.any():
            return {}, np.zeros(0)
        y = np.asarray([f for f in found if f is not None])
        return {k: v[mask] for k, v in logged.inputs.items()}, y

    def _event(
        self,
        action: str,
        key: str,
        version: int,
        measured: Mapping[str, float | int | None],
        thresholds: Mapping[str, float | int | None],
        why: str,
    ) -> Event:
        p = self.policy
        return Event(
            model=p.model,
            alias=p.alias,
            kind=KIND,
            action=action,
            version=version,
            measured=dict(measured),
            thresholds=dict(thresholds),
            reason=why,
            dry_run=p.dry_run,
            decision=f"{key}:{action}",
        )


def read_labels(path: str | Path) -> dict[str, list[Any]]:
    """A labels file as columns: ``request_id`` (str), ``label``, and ``row`` (int) when it has one.

    Example:
        >>> read_labels("labels.csv")["label"][:3]   # doctest: +SKIP
        [0, 2, 1]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = require("pyarrow.parquet", feature="labels files", extra="payloads", package="pyarrow").read_table(path)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        table = require("pyarrow.json", feature="labels files", extra="payloads", package="pyarrow").read_json(path)
    else:
        table = require("pyarrow.csv", feature="labels files", extra="payloads", package="pyarrow").read_csv(path)
    missing = [c for c in ("request_id", "label") if c not in table.column_names]
    if missing:
        raise StoreError(
            f"labels file {path.name!r} lacks columns {missing}: it needs request_id, label (and row for "
            f"requests of several rows); it has {table.column_names}"
        )
    out: dict[str, list[Any]] = {
        "request_id": [str(r) for r in table.column("request_id").to_pylist()],
        "label": table.column("label").to_pylist(),
    }
    if "row" in table.column_names:
        out["row"] = [int(r) for r in table.column("row").to_pylist()]
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
