"""Canary analysis: step a canary's weight up while it holds up against the stable version, roll it back when not.

The pattern of Flagger and Argo Rollouts, on the model library's aliases. An alias that splits
traffic by weight (``set_alias("fraud", "production", {3: 0.9, 4: 0.1})``) is a canary: the highest
version is the canary, the others are stable. A :class:`CanaryPolicy` for that alias compares the
two over a window of ``window`` seconds, from the server's own metrics (requests, 5xx failures and
the latency histogram per version; the agreement of mirrored requests when a shadow rule runs the
canary, :mod:`aimass.server.shadow`):

* **rollback** as soon as the canary has served ``min_requests`` in the window and its error rate is
  more than ``max_error_rate_delta`` above the stable's, or its latency (p99 by default,
  ``latency_quantile``) more than ``max_latency_ratio`` times the stable's (and ``latency_slack``
  seconds more), or its agreement below ``min_agreement``: the alias goes back to the stable version
  alone (the canary's weight is 0) and the event says why;
* **step** when a whole window passed without regression: the canary's weight moves to the next of
  ``steps``; after the last one, **promote**: the alias points at the canary alone.

Every decision is an event in the model's timeline (:mod:`aimass.server.decisions`), keyed by
(canary version, weight, action): a server restarted after it recorded a decision finishes that
decision (sets the same weights) instead of taking another, and two workers never record one twice.
With ``dry_run`` the events are recorded (``dry_run: true``) and nothing moves.

Gauges (labels ``model``, ``alias``): ``aimass_canary_weight``, ``aimass_canary_error_rate_delta``,
``aimass_canary_latency_ratio``, ``aimass_canary_agreement`` (the window so far).

Example:
    >>> policy = CanaryPolicy(model="fraud", alias="production", window=300, steps=[0.1, 0.5])
    >>> policy.max_error_rate_delta, policy.max_latency_ratio
    (0.01, 1.5)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import pydantic

from aimass.errors import ModelNotFound
from aimass.server.decisions import Decisions
from aimass.server.metrics import canary_gauges
from aimass.store.events import Event

__all__ = ["CanaryAnalysis", "CanaryPolicy", "Measured"]

KIND = "canary"
_EPS = 1e-9


class CanaryPolicy(pydantic.BaseModel):
    """How one alias's canary is judged and moved.

    Example:
        >>> CanaryPolicy(model="fraud", alias="production", steps=[0.1, 0.25, 0.5]).steps
        [0.1, 0.25, 0.5]
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    model: str
    alias: str
    window: float = pydantic.Field(60.0, gt=0, description="seconds each weight is held and compared")
    steps: list[float] = pydantic.Field(default_factory=lambda: [0.1, 0.25, 0.5])
    max_error_rate_delta: float = pydantic.Field(0.01, ge=0)
    max_latency_ratio: float = pydantic.Field(1.5, gt=0, description="canary latency over stable's")
    latency_quantile: float = pydantic.Field(0.99, gt=0, lt=1, description="the latency compared: 0.99 is p99")
    # A version with little traffic yet runs its calls in a worker thread where a busy one runs them
    # inline (aimass.server.batching): a millisecond or two apart, at any ratio. Not a regression.
    latency_slack: float = pydantic.Field(0.005, ge=0, description="seconds slower that never count as regression")
    min_agreement: float | None = pydantic.Field(None, ge=0, le=1)
    min_requests: int = pydantic.Field(20, ge=1, description="canary requests in a window before judging")
    dry_run: bool = False

    @pydantic.field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s < 1 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps must be increasing weights in (0, 1), got {steps}")
        return steps


@dataclasses.dataclass(frozen=True)
class _Counts:
    """Cumulative counters of one model version (or one shadow rule) at one moment."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers: the model's failures and refusals, not the clients' bad requests
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), +Inf last
    shadow_rows: float = 0.0
    shadow_agreeing: float = 0.0

    def minus(self, other: _Counts) -> _Counts:
        base = dict(other.buckets)
        return _Counts(
            self.requests - other.requests,
            self.errors - other.errors,
            tuple((le, c - base.get(le, 0.0)) for le, c in self.buckets),
            self.shadow_rows - other.shadow_rows,
            self.shadow_agreeing - other.shadow_agreeing,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile`` as Prometheus computes it (linear within the bucket)."""
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        rank = q * self.buckets[-1][1]
        lower, below = 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower  # in the +Inf bucket: the highest finite bound, as Prometheus says
                inside = count - below
                return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
            lower, below = le, count
        return lower


@dataclasses.dataclass(frozen=True)
class Measured:
    """The canary against the stable version(s) over the window so far.

    Example:
        >>> Measured(canary_requests=40, stable_requests=400, error_rate_delta=0.5).error_rate_delta
        0.5
    """

    canary_requests: int = 0
    stable_requests: int = 0
    canary_error_rate: float = 0.0
    stable_error_rate: float = 0.0
    error_rate_delta: float = 0.0
    canary_latency: float | None = None  # seconds, at the policy's latency_quantile
    stable_latency: float | None = None
    latency_ratio: float | None = None
    agreement: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Window:
    canary: int
    stable: tuple[int, ...]
    weight: float
    started: float
    base: dict[int, _Counts]
    shadow_base: _Counts


_NAMES = (
    "aimass_requests_total",
    "aimass_request_failures_total",
    "aimass_request_seconds_bucket",
    "aimass_shadow_rows_total",
    "aimass_shadow_agreeing_rows_total",
)


class CanaryAnalysis:
    """Runs one :class:`CanaryPolicy`: call :meth:`tick` every second or so (the policy runner does).

    ``registry`` is the server's Prometheus registry (what it measures the versions by); ``clock``
    (seconds, monotonic) is injectable so tests step through windows without waiting.

    Example:
        >>> analysis = CanaryAnalysis(policy, decisions, registry=app.metrics.registry)   # doctest: +SKIP
        >>> analysis.tick()                                                                # doctest: +SKIP
        []
    """

    def __init__(
        self,
        policy: CanaryPolicy,
        decisions: Decisions,
        *,
        registry: Any,
        clock: Callable[[], float] = time.monotonic,
        gauges: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.decisions = decisions
        self.store = decisions.store
        self.registry = registry
        self.clock = clock
        self.window: _Window | None = None
        self.last: Measured | None = None
        self._gauges = gauges if gauges is not None else canary_gauges(registry)

    def tick(self) -> list[Event]:
        """Look at the alias and the metrics once; the events of what was decided (usually none)."""
        p = self.policy
        try:
            weights = self.store.alias(p.model, p.alias)
        except ModelNotFound:
            weights = {}
        self._set("aimass_canary_weight", 0.0)
        if len(weights) < 2:
            self.window = None
            return []
        canary = max(weights)
        stable = tuple(sorted(v for v in weights if v != canary))
        share = weights[canary] / sum(weights.values())
        self._set("aimass_canary_weight", share)
        now = self.clock()
        w = self.window
        if w is None or w.canary != canary or w.stable != stable or abs(w.weight - share) > _EPS:
            pending = self._reconcile(canary, share)
            if pending is not None:
                return [pending]
            snapshot = self._snapshot(canary, stable)
            self.window = _Window(canary, stable, share, now, snapshot[0], snapshot[1])
            return []
        m = self.measure(w, now)
        self.last = m
        self._set("aimass_canary_error_rate_delta", m.error_rate_delta)
        self._set("aimass_canary_latency_ratio", m.latency_ratio if m.latency_ratio is not None else math.nan)
        self._set("aimass_canary_agreement", m.agreement if m.agreement is not None else math.nan)
        if m.canary_requests < p.min_requests:
            return []  # too little traffic to judge yet: the window goes on
        why = self._regression(m)
        if why:
            rest = sum(weights[v] for v in stable)
            back = {v: weights[v] / rest for v in stable}
            return [self._decide("rollback", w, back, m, why, version=canary)]
        if now - w.started < p.window:
            return []
        following = [s for s in p.steps if s > share + _EPS]
        if following:
            step = following[0]
            rest = sum(weights[v] for v in stable)
            target = {v: (1 - step) * weights[v] / rest for v in stable}
            target[canary] = step
            why = f"held {p.window:g} s at weight {share:.3g} without regression: weight {step:g}"
            return [self._decide("step", w, target, m, why, version=canary)]
        why = f"held {p.window:g} s at the last step ({share:.3g}) without regression: promoted"
        return [self._decide("promote", w, {canary: 1.0}, m, why, version=canary)]

    def measure(self, w: _Window, now: float) -> Measured:
        """The window ``w`` so far: error rates, latencies and agreement, canary against stable."""
        current, shadow = self._snapshot(w.canary, w.stable)
        c = current[w.canary].minus(w.base[w.canary])
        s = _Counts()
        for v in w.stable:
            d = current[v].minus(w.base[v])
            s = _Counts(
                s.requests + d.requests,
                s.errors + d.errors,
                _add(s.buckets, d.buckets),
            )
        sh = shadow.minus(w.shadow_base)
        q = self.policy.latency_quantile
        c99, s99 = c.quantile(q), s.quantile(q)
        ratio = c99 / s99 if c99 is not None and s99 else None
        return Measured(
            canary_requests=int(c.requests),
            stable_requests=int(s.requests),
            canary_error_rate=c.error_rate,
            stable_error_rate=s.error_rate,
            error_rate_delta=c.error_rate - s.error_rate,
            canary_latency=c99,
            stable_latency=s99,
            latency_ratio=ratio,
            agreement=sh.shadow_agreeing / sh.shadow_rows if sh.shadow_rows > 0 else None,
            seconds=now - w.started,
        )

    def _regression(self, m: Measured) -> str:
        p = self.policy
        if m.error_rate_delta > p.max_error_rate_delta:
            return (
                f"canary error rate {m.canary_error_rate:.3g} vs stable {m.stable_error_rate:.3g}: "
                f"{m.error_rate_delta:.3g} above, more than max_error_rate_delta {p.max_error_rate_delta:g}"
            )
        slower = (m.canary_latency or 0.0) - (m.stable_latency or 0.0)
        if m.latency_ratio is not None and m.latency_ratio > p.max_latency_ratio and slower > p.latency_slack:
            return (
                f"canary p{p.latency_quantile * 100:g} latency {(m.canary_latency or 0) * 1000:.3g} ms vs stable "
                f"{(m.stable_latency or 0) * 1000:.3g} ms: "
                f"ratio {m.latency_ratio:.3g}, more than max_latency_ratio {p.max_latency_ratio:g}"
            )
        if p.min_agreement is not None and m.agreement is not None and m.agreement < p.min_agreement:
            return f"canary agreement {m.agreement:.3g} with stable, below min_agreement {p.min_agreement:g}"
        return ""

    def _thresholds(self) -> dict[str, float | int | None]:
        p = self.policy
        return {
            "max_error_rate_delta": p.max_error_rate_delta,
            "max_latency_ratio": p.max_latency_ratio,
            "latency_quantile": p.latency_quantile,
            "latency_slack": p.latency_slack,
            "min_agreement": p.min_agreement,
            "min_requests": p.min_requests,
            "window": p.window,
        }

    def _key(self, canary: int, share: float, action: str) -> str:
        p = self.policy
        mode = ":dry-run" if p.dry_run else ""
        return f"{KIND}:{p.model}@{p.alias}:{canary}:{share:.6f}:{action}{mode}"

    def _decide(
        self, action: str, w: _Window, target: dict[int, float], m: Measured, why: str, *, version: int
    ) -> Event:
        p = self.policy
        event = Event(
            model=p.model,
            alias=p.alias,
            kind=KIND,
            action=action,
            version=version,
            weights={str(v): round(x, 6) for v, x in sorted(target.items())},
            measured=m.as_dict(),
            thresholds=self._thresholds(),
            reason=why,
            dry_run=p.dry_run,
            decision=self._key(w.canary, w.weight, action),
        )
        self.decisions.record(event)  # first: a restart finds the decision and finishes it (_reconcile)
        if p.dry_run:
            self.window = None  # nothing moved: judge the same weight again, from a fresh window
        else:
            self.store.set_alias(p.model, p.alias, target)
        return event

    def _reconcile(self, canary: int, share: float) -> Event | None:
        """A decision recorded for this canary at this weight but not carried out (the server stopped
        between the two): carry it out now, without recording another."""
        if self.policy.dry_run:
            return None
        prefix = self._key(canary, share, "")
        for event in reversed(self.decisions.events(self.policy.model)):
            if event.decision.startswith(prefix) and not event.dry_run and event.weights:
                self.store.set_alias(
                    self.policy.model, self.policy.alias, {int(v): x for v, x in event.weights.items()}
                )
                self.window = None
                return event
        return None

    def _snapshot(self, canary: int, stable: tuple[int, ...]) -> tuple[dict[int, _Counts], _Counts]:
        p = self.policy
        wanted = {str(v) for v in (canary, *stable)}
        requests: dict[str, float] = {}
        errors: dict[str, float] = {}
        buckets: dict[str, list[tuple[float, float]]] = {}
        rows = agreeing = 0.0
        for family in self.registry.restricted_registry(_NAMES).collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != p.model:
                    continue
                version = labels.get("version")
                if sample.name.startswith("aimass_shadow_"):
                    if labels.get("alias") == p.alias and labels.get("candidate") == str(canary):
                        if sample.name == "aimass_shadow_rows_total":
                            rows += sample.value
                        elif sample.name == "aimass_shadow_agreeing_rows_total":
                            agreeing += sample.value
                    continue
                if version not in wanted:
                    continue
                if sample.name == "aimass_requests_total":
                    requests[version] = sample.value
                elif sample.name == "aimass_request_failures_total" and labels.get("status", "").startswith("5"):
                    errors[version] = errors.get(version, 0.0) + sample.value
                elif sample.name == "aimass_request_seconds_bucket":
                    buckets.setdefault(version, []).append((float(labels["le"]), sample.value))
        counts = {
            int(v): _Counts(requests.get(v, 0.0), errors.get(v, 0.0), tuple(sorted(buckets.get(v, [])))) for v in wanted
        }
        return counts, _Counts(shadow_rows=rows, shadow_agreeing=agreeing)

    def _set(self, name: str, value: float) -> None:
        self._gauges[name].labels(self.policy.model, self.policy.alias).set(value)


def _add(a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if not a:
        return b
    if not b:
        return a
    other = dict(b)
    return tuple((le, c + other.get(le, 0.0)) for le, c in a)
