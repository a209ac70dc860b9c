"""OpenTelemetry spans for served requests: decode, queue, compute and encode under one server span.

Off unless asked for: ``create_app(trace=True)`` (``aimass serve --trace``), with the
``[otel]`` extra installed; when off nothing of OpenTelemetry is imported. Each inference request
becomes a server span ``infer <model>`` (attributes: model, version, HTTP status) whose parent is
the caller's W3C ``traceparent`` header when it sent one (the remote backend does, when the
calling process uses OpenTelemetry: :mod:`aimass.backends.remote`), with four children: ``decode``
(body to tensors), ``queue`` (waiting for a model call), ``compute`` (the model call) and ``encode``
(the response). A request merged into a dynamic batch gets one ``batch`` child instead of
``queue`` and ``compute``, since its wait and its share of the merged call are not separable.

Spans are made after the request, with the timestamps taken on the way (``start_time``/``end_time``),
so tracing adds no span objects to the request path itself.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider                          # doctest: +SKIP
    >>> app = create_app(repository="models/", trace=ServerTracing(TracerProvider()))   # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aimass.dependencies import require

__all__ = ["MARKS", "Marks", "ServerTracing", "compute_marked"]

A = TypeVar("A")
R = TypeVar("R")


@dataclasses.dataclass
class Marks:
    """Timestamps (ns since the epoch) of one request's stages; 0 = not reached."""

    start: int = 0
    decoded: int = 0
    compute_start: int = 0
    compute_end: int = 0
    inferred: int = 0
    encoded: int = 0


# Set by the server around a traced request; the model call fills in compute_start/compute_end.
MARKS: contextvars.ContextVar[Marks | None] = contextvars.ContextVar("aimass_trace_marks", default=None)


def now() -> int:
    """The clock spans use (ns since the epoch)."""
    return time.time_ns()


def compute_marked(fn: Callable[[A], R]) -> Callable[[A], R]:
    """``fn`` itself, or in a traced request (:data:`MARKS` set) ``fn`` noting when the model call ran.

    Read on the event loop, where the request's context is; the call itself may run in a worker thread.

    Example:
        >>> compute_marked(len)([1, 2])
        2
    """
    marks = MARKS.get()
    if marks is None:
        return fn

    def marked(arg: A) -> R:
        marks.compute_start = now()
        try:
            return fn(arg)
        finally:
            marks.compute_end = now()

    return marked


class ServerTracing:
    """Makes the spans of traced requests with a tracer from ``tracer_provider`` (default: the global one).

    Example:
        >>> tracing = ServerTracing()   # doctest: +SKIP
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        trace = require("opentelemetry.trace", feature="tracing", extra="otel", package="opentelemetry-api")
        self._propagate = require(
            "opentelemetry.propagate", feature="tracing", extra="otel", package="opentelemetry-api"
        )
        self._trace = trace
        self.tracer = trace.get_tracer("aimass.server", tracer_provider=tracer_provider)

    def record(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        model: str,
        version: str | None,
        marks: Marks,
        status: int,
    ) -> None:
        """Emit the spans of one finished request (its ``traceparent`` header, if any, is the parent)."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
        parent = self._propagate.extract(carrier) if carrier else None
        end = marks.encoded or marks.inferred or marks.decoded or now()
        attributes = {"aimass.model": model, "aimass.version": version or "", "http.response.status_code": status}
        span = self.tracer.start_span(
            f"infer {model}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            start_time=marks.start,
            attributes=attributes,
        )
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        context = self._trace.set_span_in_context(span)
        stages: list[tuple[str, int, int]] = []
        if marks.decoded:
            stages.append(("decode", marks.start, marks.decoded))
        if marks.inferred:
            if marks.compute_start:
                stages.append(("queue", marks.decoded, marks.compute_start))
                stages.append(("compute", marks.compute_start, marks.compute_end))
            else:
                stages.append(("batch", marks.decoded, marks.inferred))
        if marks.encoded:
            stages.append(("encode", marks.inferred, marks.encoded))
        for name, begin, finish in stages:
            child = self.tracer.start_span(name, context=context, start_time=begin)
            child.end(end_time=max(finish, begin))
        span.end(end_time=end)
