"""Client-side load balancing over several plain ``aimass serve`` endpoints, for users without Ray.

:class:`Balancer` is the policy: each request goes to the healthy endpoint with the fewest
requests outstanding from this client (ties rotate, so light load still spreads); an endpoint that
refuses a connection is ejected at once, one that fails otherwise (timeouts, broken responses, 502/
503/504) after ``max_failures`` failures in a row. An ejected endpoint is probed
(``GET /v2/health/ready``) in the background after ``ejection_time`` seconds, doubling up to
``max_ejection_time`` while it stays down, and re-admitted when the probe answers 200.

:class:`BalancingTransport` applies it to httpx (sync and async): it rewrites each request to the
chosen endpoint and, when the connection is refused, tries the next endpoint (the request never
reached a server, so it is safe to send again). It plugs into the remote backend through its
``transport`` option, so every remote feature (binary tensors, typed errors, retries) is unchanged.

Example:
    >>> from aimass import Model
    >>> t = BalancingTransport(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])            # doctest: +SKIP
    >>> m = Model.load("http://10.0.0.1:8000/v2/models/fraud", options={"transport": t})    # doctest: +SKIP
    >>> m.predict(rows); t.balancer.snapshot()                                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from aimass.backends.transport import SharedTransport
from aimass.dependencies import require

__all__ = ["Balancer", "BalancingTransport", "EndpointState", "http_probe"]

# Statuses that say "this server cannot answer now" rather than "this request is wrong".
_UNHEALTHY_STATUS = frozenset({502, 503, 504})


def _httpx() -> Any:
    return require("httpx", feature="remote models", extra="server")


@dataclasses.dataclass
class EndpointState:
    """What the balancer knows about one endpoint."""

    url: str
    outstanding: int = 0
    failures: int = 0  # consecutive
    ejected: bool = False
    ejections: int = 0  # consecutive ejections without a healthy probe in between
    retry_at: float = 0.0
    probing: bool = False
    sent: int = 0


def http_probe(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers ``GET /v2/health/ready`` with 200."""
    httpx = _httpx()
    try:
        return bool(httpx.get(f"{url}/v2/health/ready", timeout=timeout).status_code == 200)
    except httpx.HTTPError:
        return False


class Balancer:
    """Least-outstanding-requests over endpoints, with health-based ejection and probed re-admission.

    ``probe(url) -> bool`` checks an ejected endpoint (default :func:`http_probe`); probes run in
    daemon threads so no request waits for one.

    Example:
        >>> b = Balancer(["http://a:8000", "http://b:8000"], probe=lambda url: True)
        >>> first = b.acquire(); second = b.acquire()
        >>> first != second, b.release(first, ok=True), b.release(second, ok=True)
        (True, None, None)
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        max_failures: int = 3,
        ejection_time: float = 1.0,
        max_ejection_time: float = 30.0,
        probe: Callable[[str], bool] = http_probe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        urls = list(dict.fromkeys(u.rstrip("/") for u in endpoints))
        if not urls:
            raise ValueError("a balancer needs at least one endpoint")
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures}")
        self.endpoints = {u: EndpointState(u) for u in urls}
        self.max_failures = max_failures
        self.ejection_time = ejection_time
        self.max_ejection_time = max_ejection_time
        self.probe = probe
        self.clock = clock
        self._order = urls
        self._next = 0
        self._lock = threading.Lock()

    # -- choosing -------------------------------------------------------------------------------

    def acquire(self, exclude: Sequence[str] = ()) -> str | None:
        """The endpoint for the next request (its outstanding count goes up); None when none is healthy."""
        with self._lock:
            self._start_due_probes()
            best: EndpointState | None = None
            n = len(self._order)
            for i in range(n):
                state = self.endpoints[self._order[(self._next + i) % n]]
                if state.ejected or state.url in exclude:
                    continue
                if best is None or state.outstanding < best.outstanding:
                    best = state
            if best is None:
                return None
            self._next = (self._order.index(best.url) + 1) % n
            best.outstanding += 1
            best.sent += 1
            return best.url

    def release(self, url: str, *, ok: bool, refused: bool = False) -> None:
        """Record the end of a request: ``ok`` resets the failure count; ``refused`` ejects at once."""
        with self._lock:
            state = self.endpoints[url]
            state.outstanding -= 1
            if ok:
                state.failures = 0
                return
            state.failures += 1
            if refused or state.failures >= self.max_failures:
                self._eject(state)

    def _eject(self, state: EndpointState) -> None:
        if state.ejected:
            return
        state.ejected = True
        state.ejections += 1
        state.retry_at = self.clock() + self._backoff(state)

    def _backoff(self, state: EndpointState) -> float:
        return float(min(self.max_ejection_time, self.ejection_time * 2 ** max(0, state.ejections - 1)))

    # -- re-admission -------------------------------------------------------------------------

    def _start_due_probes(self) -> None:
        now = self.clock()
        for state in self.endpoints.values():
            if state.ejected and not state.probing and now >= state.retry_at:
                state.probing = True
                threading.Thread(target=self._probe, args=(state,), name="aimass-probe", daemon=True).start()

    def _probe(self, state: EndpointState) -> None:
        healthy = False
        try:
            healthy = self.probe(state.url)
        finally:
            with self._lock:
                state.probing = False
                if healthy:
                    state.ejected, state.failures, state.ejections = False, 0, 0
                else:
                    state.ejections += 1
                    state.retry_at = self.clock() + self._backoff(state)

    def check(self) -> None:
        """Probe every ejected endpoint now, in this thread (re-admits the healthy ones)."""
        for state in list(self.endpoints.values()):
            with self._lock:
                if not state.ejected or state.probing:
                    continue
                state.probing = True
            self._probe(state)

    # -- introspection ------------------------------------------------------------------------

    def healthy(self) -> list[str]:
        return [u for u, s in self.endpoints.items() if not s.ejected]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{url: {"outstanding", "sent", "failures", "ejected"}}`` for logs and tests."""
        with self._lock:
            return {
                u: {"outstanding": s.outstanding, "sent": s.sent, "failures": s.failures, "ejected": s.ejected}
                for u, s in self.endpoints.items()
            }


class BalancingTransport(SharedTransport):
    """An httpx transport (sync and async) that spreads requests over endpoints with a :class:`Balancer`.

    Requests keep their path below the endpoint base: a request for ``<any endpoint>/v2/...`` is
    sent to ``<chosen endpoint>/v2/...``. Options go to :class:`Balancer`.
    """

    def __init__(self, endpoints: Sequence[str] | Balancer, **options: Any) -> None:
        httpx = _httpx()
        self.balancer = endpoints if isinstance(endpoints, Balancer) else Balancer(endpoints, **options)
        self._bases = {u: httpx.URL(u) for u in self.balancer.endpoints}
        self._sync = httpx.HTTPTransport()
        self._async: dict[int, Any] = {}

    def _target(self, request: Any, endpoint: str) -> Any:
        url = request.url
        path = url.raw_path
        for base in self._bases.values():
            prefix = base.raw_path.rstrip(b"/")
            if (url.host, url.port, url.scheme) == (base.host, base.port, base.scheme) and path.startswith(prefix):
                path = path[len(prefix) :]
                break
        chosen = self._bases[endpoint]
        target = chosen.copy_with(raw_path=chosen.raw_path.rstrip(b"/") + path)
        request.url = target
        request.headers["host"] = target.netloc.decode("ascii")
        return request

    def _outcome(self, status: int) -> bool:
        return status not in _UNHEALTHY_STATUS

    def handle_request(self, request: Any) -> Any:
        httpx = _httpx()
        tried: list[str] = []
        while (endpoint := self.balancer.acquire(tried)) is not None:
            tried.append(endpoint)
            try:
                response = self._sync.handle_request(self._target(request, endpoint))
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self.balancer.release(endpoint, ok=False, refused=True)
                continue  # never reached the server: safe to send elsewhere
            except BaseException:
                self.balancer.release(endpoint, ok=False)
                raise
            self.balancer.release(endpoint, ok=self._outcome(response.status_code))
            return response
        raise httpx.ConnectError(f"no healthy endpoint among {list(self.balancer.endpoints)}", request=request)

    async def handle_async_request(self, request: Any) -> Any:
        httpx = _httpx()
        key = id(asyncio.get_running_loop())
        inner = self._async.get(key)
        if inner is None:  # a connection pool belongs to the event loop it was made on
            inner = self._async[key] = httpx.AsyncHTTPTransport()
        tried: list[str] = []
        while (endpoint := self.balancer.acquire(tried)) is not None:
            tried.append(endpoint)
            try:
                response = await inner.handle_async_request(self._target(request, endpoint))
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self.balancer.release(endpoint, ok=False, refused=True)
                continue
            except BaseException:
                self.balancer.release(endpoint, ok=False)
                raise
            self.balancer.release(endpoint, ok=self._outcome(response.status_code))
            return response
        raise httpx.ConnectError(f"no healthy endpoint among {list(self.balancer.endpoints)}", request=request)

    def shutdown(self) -> None:
        """Close the synchronous connection pool (async pools close with their event loops)."""
        self._sync.close()
