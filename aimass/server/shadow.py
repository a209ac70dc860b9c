"""Shadow traffic: mirror a share of an alias's requests to a candidate version, compare, never answer with it.

``create_app(repository="library/", shadow=[ShadowRule("fraud", "production", "4", share=0.2)])``
(``aimass serve library/ --shadow fraud@production=4:0.2``): after a request to
``/v2/models/fraud/versions/production/infer`` is answered, one in five is run again on version 4
in the background. The client only ever gets the alias's answer; the candidate's answer is
compared with it (:func:`aimass.measure.compare_outputs`: agreement of the top class or value per
row, absolute differences) and, with payload logs on, logged under the candidate's version with
the same request id. Canary weights (``set_alias(name, alias, {3: 0.9, 4: 0.1})``) are untouched:
the answer still comes from the version the weights draw.

Shadow runs are bounded, so a flood of mirrored requests never piles up work or memory behind the
answered ones: at most ``max_in_flight`` runs at once (default 8, ``--shadow-max-in-flight``)
holding at most ``max_bytes`` of tensors (inputs and answer, default 128 MiB,
``--shadow-max-bytes``). A request beyond either bound is not mirrored: it is dropped and counted
(``aimass_shadow_dropped_total``, by ``reason``), and the client's request never waits for it.

Metrics (labels ``model``, ``alias``, ``candidate``): ``aimass_shadow_requests_total``,
``aimass_shadow_errors_total``, ``aimass_shadow_dropped_total`` (and ``reason``),
``aimass_shadow_rows_total``, ``aimass_shadow_agreeing_rows_total`` (agreement = agreeing / rows),
``aimass_shadow_max_abs_diff`` (histogram per request); ``aimass_shadow_in_flight`` and
``aimass_shadow_in_flight_bytes`` (gauges, all rules); :meth:`Shadow.report` gives the same as
JSON-ready data.

Example:
    >>> app = create_app(repository="library/", shadow=[ShadowRule("fraud", "production", "4", 0.2)])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.measure import compare_outputs

if TYPE_CHECKING:
    from aimass.server.payload_log import PayloadLog
    from aimass.server.repository import Repository

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_IN_FLIGHT", "Shadow", "ShadowRule", "parse_shadow"]

log = logging.getLogger("aimass.server")

DEFAULT_MAX_IN_FLIGHT = 8  # shadow runs at once: a candidate's share of the model threads stays small
DEFAULT_MAX_BYTES = 128 * 1024 * 1024  # tensors (inputs and answers) the runs in flight hold

_DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0)


@dataclasses.dataclass(frozen=True)
class ShadowRule:
    """Mirror ``share`` of the requests to ``model`` at ``alias`` onto version ``candidate``.

    Example:
        >>> ShadowRule("fraud", "production", "4", share=0.2).share
        0.2
    """

    model: str
    alias: str
    candidate: str
    share: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"shadow share must be in (0, 1], got {self.share}")


def parse_shadow(text: str) -> ShadowRule:
    """``"fraud@production=4:0.2"`` -> ShadowRule (share 1 when ``:SHARE`` is left out).

    Example:
        >>> parse_shadow("fraud@production=4:0.2")
        ShadowRule(model='fraud', alias='production', candidate='4', share=0.2)
    """
    head, sep, tail = text.partition("=")
    model, at, alias = head.partition("@")
    candidate, colon, share = tail.partition(":")
    if not (sep and at and model and alias and candidate):
        raise ValueError(f"{text!r}: use MODEL@ALIAS=VERSION[:SHARE], e.g. fraud@production=4:0.2")
    return ShadowRule(model, alias, candidate, float(share) if colon else 1.0)


@dataclasses.dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    dropped: int = 0
    rows: int = 0
    agreeing: int = 0
    max_abs_diff: float = 0.0
    sum_abs_diff: float = 0.0


class Shadow:
    """The shadow rules of one server, the background runs, and their comparison.

    Example:
        >>> shadow = Shadow([ShadowRule("fraud", "production", "4")], repository, registry=reg)   # doctest: +SKIP
    """

    def __init__(
        self,
        rules: Iterable[ShadowRule],
        repository: Repository,
        *,
        registry: Any = None,
        payload_log: PayloadLog | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: no byte bound), got {max_bytes}")
        self.rules = {(r.model, r.alias): r for r in rules}
        self.repository = repository
        self.payload_log = payload_log
        self.max_in_flight = max_in_flight
        self.max_bytes = max_bytes
        self.in_flight_bytes = 0  # tensors held by the runs in flight (the event loop alone changes it)
        self.tallies: dict[ShadowRule, _Tally] = {r: _Tally() for r in self.rules.values()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics: tuple[Any, ...] | None = None
        self._gauges: tuple[Any, Any] | None = None
        if registry is not None:
            from prometheus_client import Counter, Gauge, Histogram

            labels = ("model", "alias", "candidate")
            self._metrics = (
                Counter("aimass_shadow_requests", "Requests mirrored to a candidate.", labels, registry=registry),
                Counter("aimass_shadow_errors", "Shadow runs that failed.", labels, registry=registry),
                Counter("aimass_shadow_rows", "Rows compared with a shadow candidate.", labels, registry=registry),
                Counter(
                    "aimass_shadow_agreeing_rows",
                    "Rows where the shadow candidate agreed (top class or value).",
                    labels,
                    registry=registry,
                ),
                Histogram(
                    "aimass_shadow_max_abs_diff",
                    "Largest absolute output difference, candidate vs answer, per request.",
                    labels,
                    buckets=_DIFF_BUCKETS,
                    registry=registry,
                ),
                Counter(
                    "aimass_shadow_dropped",
                    "Requests not mirrored: shadow runs at max_in_flight or their tensors at max_bytes.",
                    (*labels, "reason"),
                    registry=registry,
                ),
            )
            self._gauges = (
                Gauge(
                    "aimass_shadow_in_flight", "Shadow runs in flight.", registry=registry, multiprocess_mode="livesum"
                ),
                Gauge(
                    "aimass_shadow_in_flight_bytes",
                    "Tensor bytes held by the shadow runs in flight.",
                    registry=registry,
                    multiprocess_mode="livesum",
                ),
            )

    @property
    def in_flight(self) -> int:
        """Shadow runs started and not finished."""
        return len(self._tasks)

    def pick(self, model: str, requested: str | None, answered_by: str) -> ShadowRule | None:
        """The rule a request to ``model`` at ``requested`` (an alias) falls under, drawn by share.

        None when the alias's own answer came from the candidate (a canary drew it).
        """
        if requested is None:
            return None
        rule = self.rules.get((model, requested))
        if rule is None or rule.candidate == answered_by or (rule.share < 1.0 and random.random() >= rule.share):
            return None
        return rule

    def mirror(
        self,
        rule: ShadowRule,
        inputs: Mapping[str, np.ndarray],
        answer: Mapping[str, np.ndarray],
        request_id: str | None,
    ) -> bool:
        """Run the candidate on ``inputs`` in the background and compare with ``answer`` (never awaited).

        False when the request was dropped instead (counted): ``max_in_flight`` runs are going, or
        its tensors would take the runs' bytes past ``max_bytes``.
        """
        size = sum(int(a.nbytes) for t in (inputs, answer) for a in t.values())
        if len(self._tasks) >= self.max_in_flight:
            return self._drop(rule, "in_flight")
        if self.max_bytes and self.in_flight_bytes + size > self.max_bytes:
            return self._drop(rule, "bytes")
        task = asyncio.get_running_loop().create_task(self._run(rule, dict(inputs), dict(answer), request_id))
        self._tasks.add(task)  # a reference, so the task is not collected mid-run
        self._held(size)
        task.add_done_callback(functools.partial(self._finished, size))
        return True

    def _drop(self, rule: ShadowRule, reason: str) -> bool:
        self.tallies[rule].dropped += 1
        if self._metrics:
            self._metrics[5].labels(rule.model, rule.alias, rule.candidate, reason).inc()
        return False

    def _finished(self, size: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._held(-size)

    def _held(self, size: int) -> None:
        self.in_flight_bytes += size
        if self._gauges:
            self._gauges[0].set(len(self._tasks))
            self._gauges[1].set(self.in_flight_bytes)

    async def drain(self) -> None:
        """Wait for the shadow runs in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(
        self, rule: ShadowRule, inputs: dict[str, np.ndarray], answer: dict[str, np.ndarray], request_id: str | None
    ) -> None:
        tally = self.tallies[rule]
        labels = (rule.model, rule.alias, rule.candidate)
        tally.requests += 1
        if self._metrics:
            self._metrics[0].labels(*labels).inc()
        start = time.perf_counter()
        try:
            served = await self.repository.acquire(rule.model, rule.candidate)
            try:
                out = await served.infer(inputs)
            finally:
                self.repository.release(served)
            drifts = compare_outputs(answer, out)
        except Exception as e:  # the client has its answer already; a failing candidate is counted
            tally.errors += 1
            if self._metrics:
                self._metrics[1].labels(*labels).inc()
            log.debug("shadow run of %s version %s failed: %s", rule.model, rule.candidate, e)
            return
        rows = int(next(iter(answer.values())).shape[0]) if answer and next(iter(answer.values())).ndim else 1
        agreement = min((d.top1_agreement for d in drifts if d.top1_agreement is not None), default=None)
        if agreement is None:  # no classes to agree on: agreement is equality within float noise
            agreement = 1.0 if all(d.max_abs_error <= 1e-6 for d in drifts) else 0.0
        agreeing = round(agreement * rows)
        worst = max((d.max_abs_error for d in drifts), default=0.0)
        tally.rows += rows
        tally.agreeing += agreeing
        tally.max_abs_diff = max(tally.max_abs_diff, worst)
        tally.sum_abs_diff += float(np.mean([d.mean_abs_error for d in drifts])) if drifts else 0.0
        if self._metrics:
            self._metrics[2].labels(*labels).inc(rows)
            self._metrics[3].labels(*labels).inc(agreeing)
            self._metrics[4].labels(*labels).observe(worst)
        plog = self.payload_log
        if plog is not None and request_id is not None and plog.sampled():
            plog.log(rule.model, served.version, request_id, inputs, out, time.perf_counter() - start)

    def report(self) -> list[dict[str, Any]]:
        """Per rule: requests mirrored, errors, dropped, rows compared, agreement, largest and mean abs difference."""
        out = []
        for rule, t in self.tallies.items():
            done = t.requests - t.errors
            out.append(
                {
                    **dataclasses.asdict(rule),
                    "requests": t.requests,
                    "errors": t.errors,
                    "dropped": t.dropped,
                    "rows": t.rows,
                    "agreement": t.agreeing / t.rows if t.rows else None,
                    "max_abs_diff": t.max_abs_diff,
                    "mean_abs_diff": t.sum_abs_diff / done if done else None,
                }
            )
        return out
