"""Deadlines for a request's headers and body on uvicorn's HTTP protocol: slow clients are cut and counted.

uvicorn bounds the idle time between two requests of a connection (``timeout_keep_alive``) but not
the time a request takes to arrive: its keep-alive timer stops at the first byte, and nothing
starts one when a connection opens. Measured before these deadlines: 500 connections that sent
their headers and 10 of 1000 body bytes were all still open after 75 s, each holding a request
task. An ASGI app cannot see a request before its headers are complete, so the deadlines live in
the protocol, as subclasses of uvicorn's two HTTP protocols that :func:`protocol` picks:

- **headers**: from the moment a connection opens (or the first byte of its next request) until
  the request's headers are in, at most ``header_timeout`` seconds;
- **body**: from then until the last body byte, at most ``body_timeout`` seconds.

Past a deadline the connection is closed, after a ``408`` JSON answer when the client had started a
request and nothing was answered yet (a connection opened and never used, as browsers open ahead
of time, is closed silently). Each cut is counted in ``aimass_slow_clients_total{phase}``
(``idle``, ``headers``, ``body``) when the app registered :data:`STATE_KEY` in uvicorn's lifespan
state (:class:`aimass.server.app.App` does). A cut costs other clients nothing: timers on the
event loop, no thread, no polling.

Example:
    >>> import uvicorn
    >>> http = protocol("httptools", header_timeout=10, body_timeout=60)
    >>> uvicorn.run(app, http=http)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "STATE_KEY",
    "H11WithDeadlines",
    "SlowClients",
    "protocol",
]

log = logging.getLogger("aimass.server")

# Headers are a few hundred bytes: any real client sends them in milliseconds.
DEFAULT_HEADER_TIMEOUT = 10.0
# A body at the default size limit (64 MiB) must come at 1.1 MB/s or more.
DEFAULT_BODY_TIMEOUT = 60.0
# The key under which an app puts its cut counter (a callable taking the phase) in uvicorn's lifespan state.
STATE_KEY = "aimass.slow_client"


class SlowClients:
    """The ``aimass_slow_clients_total`` counter of one app, by phase (``idle``, ``headers``, ``body``).

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> SlowClients(CollectorRegistry()).cut("body")
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._cut = Counter(
            "aimass_slow_clients",
            "Connections closed because a request's headers or body did not arrive in time, by phase.",
            ("phase",),
            registry=registry,
        )

    def cut(self, phase: str) -> None:
        """Count one connection cut while it was in ``phase``."""
        self._cut.labels(phase).inc()


class _Clock:
    """The deadline of the request a connection is receiving; one per connection, driven by its protocol."""

    def __init__(self, protocol: Any, header_timeout: float, body_timeout: float) -> None:
        self.protocol = protocol
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.phase: str | None = None  # idle / headers / body while a deadline runs
        self.cycle: Any = None  # the request whose headers were seen last
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """A connection opened: its first request's headers are due."""
        self._arm("idle", self.header_timeout)

    def update(self, arrived: bool) -> None:
        """After uvicorn parsed what ``arrived`` (True) or finished a response (False): the next phase."""
        p = self.protocol
        if p.transport is None or p.transport.get_protocol() is not p:
            return self.stop()  # closed, or upgraded to another protocol
        cycle = p.cycle
        if cycle is not self.cycle:  # the headers of a new request are in
            self.cycle = cycle
            if cycle.more_body:
                self._arm("body", self.body_timeout)
            else:
                self.stop()
        elif self.phase == "body" and not cycle.more_body:
            self.stop()
        elif not arrived:
            return  # idle between requests: uvicorn's keep-alive timer runs
        elif self.phase == "idle":
            self.phase = "headers"  # the same deadline, now that bytes came
        elif self.phase is None and cycle is not None and not cycle.more_body:
            self._arm("headers", self.header_timeout)  # the first bytes of the next request

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.phase = None, None

    def _arm(self, phase: str, seconds: float) -> None:
        self.stop()
        if seconds > 0:
            self.phase = phase
            self.timer = self.protocol.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        p, phase = self.protocol, self.phase or "headers"
        self.timer, self.phase = None, None
        transport = p.transport
        if transport is None or transport.is_closing():
            return
        hook = p.app_state.get(STATE_KEY)
        if callable(hook):
            hook(phase)
        seconds = self.body_timeout if phase == "body" else self.header_timeout
        log.debug("closed a connection whose request %s did not arrive within %g s", phase, seconds)
        cycle = p.cycle
        if phase == "body":
            answer = not cycle.response_started
            cycle.disconnected = True  # the app's receive() answers http.disconnect; its answer goes nowhere
            cycle.message_event.set()
        else:
            answer = phase == "headers" and (cycle is None or cycle.response_complete)
        if answer:
            what = "body" if phase == "body" else "headers"
            body = orjson.dumps({"error": f"request {what} not received within {seconds:g} s"})
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
        transport.close()


class H11WithDeadlines(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines (see the module's docstring)."""

    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadlines = _Clock(self, header_timeout, body_timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.deadlines.start()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.deadlines.update(arrived=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.deadlines.update(arrived=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadlines.stop()
        super().connection_lost(exc)


if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsWithDeadlines(HttpToolsProtocol):
        """uvicorn's httptools protocol with header and body deadlines (see the module's docstring)."""

        def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.deadlines = _Clock(self, header_timeout, body_timeout)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.deadlines.start()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.deadlines.update(arrived=True)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.deadlines.update(arrived=False)

        def connection_lost(self, exc: Exception | None) -> None:
            self.deadlines.stop()
            super().connection_lost(exc)

    __all__ = sorted([*__all__, "HttpToolsWithDeadlines"])


def protocol(
    http: str, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT
) -> Any:
    """uvicorn's ``http`` setting for ``http`` (``"httptools"`` or ``"h11"``) with these deadlines (0: none).

    A ``functools.partial`` of a module-level class, so worker processes can receive it.

    Example:
        >>> protocol("h11", header_timeout=5, body_timeout=30).keywords
        {'header_timeout': 5, 'body_timeout': 30}
    """
    cls = HttpToolsWithDeadlines if http == "httptools" else H11WithDeadlines
    return functools.partial(cls, header_timeout=header_timeout, body_timeout=body_timeout)
