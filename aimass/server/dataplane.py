"""The data plane: what a V2 request does once its transport has read it, the same for HTTP and gRPC.

HTTP (:class:`aimass.server.app.App`) and gRPC (:class:`aimass.server.grpc.InferenceServicer`) each
read a request and write an answer in their wire's form; in between both call one
:class:`DataPlane`: :meth:`~DataPlane.infer` (take the model from the registry, decode, check,
run, log, mirror, encode, count), :meth:`~DataPlane.lookup` for metadata and config,
:meth:`~DataPlane.offload` (large messages off the event loop), the bearer token
(:attr:`~DataPlane.auth`) and the redaction of what goes out (:meth:`~DataPlane.redact`). MLServer
and KServe split their servers the same way (``handlers/dataplane.py``, ``protocol/dataplane.py``).

Example:
    >>> plane = create_app({"mlp": "mlp.onnx"}).dataplane        # doctest: +SKIP
    >>> await plane.infer("mlp", None, decode, encode)            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import numpy as np

from aimass.errors import SchemaError
from aimass.protocol import v2
from aimass.redaction import redact
from aimass.schema import Schema
from aimass.server.http import BearerToken, error_response
from aimass.server.payload_log import PayloadLog, new_request_id
from aimass.server.tracing import MARKS, Marks, ServerTracing
from aimass.server.tracing import now as trace_clock

if TYPE_CHECKING:
    from aimass.server.repository import Repository
    from aimass.server.served import ServedModel
    from aimass.server.shadow import Shadow

__all__ = ["Answer", "DataPlane", "HasDataPlane", "PlaneAttribute", "dataplane_of"]

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """What a transport encodes: the model that answered, the decoded request, outputs, request id."""

    served: ServedModel
    request: v2.InferRequest
    outputs: dict[str, np.ndarray]
    request_id: str | None


class DataPlane:
    """Lookup and inference over a repository's registry, shared by every transport.

    ``max_elements`` bounds each decoded input tensor; ``max_body_size`` is the largest message a
    transport takes (HTTP body, gRPC message by default). ``payload_log``, ``shadow`` and
    ``tracing`` (None: off) are set by :func:`aimass.server.app.create_app`.

    Example:
        >>> plane = DataPlane(repo, executor=pool, auth_token="s3cret")   # doctest: +SKIP
    """

    def __init__(
        self,
        repository: Repository,
        *,
        executor: Executor,
        auth_token: str | None = None,
        max_body_size: int,
        max_elements: int = v2.DEFAULT_MAX_ELEMENTS,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.auth = BearerToken(auth_token)  # the one token check: HTTP, gRPC metadata, dashboard
        self.max_body_size = max_body_size
        self.max_elements = max_elements
        # Request/response records (aimass.server.payload_log); None: not logged.
        self.payload_log: PayloadLog | None = None
        # Requests mirrored to candidate versions (aimass.server.shadow); None: none.
        self.shadow: Shadow | None = None
        # OpenTelemetry spans of inference requests (aimass.server.tracing); None: off.
        self.tracing: ServerTracing | None = None

    def redact(self, body: bytes) -> bytes:
        """An error body without the bearer token, server file-system paths or secret-looking values.

        The full text stays in the server's log; :func:`aimass.redaction.redact` says what is removed.

        A path is cut to ``.../<last component>`` when its first component is a directory at this
        machine's root (``/home``, ``/tmp``, ``/srv`` ...); URL paths such as ``/v2/models/x`` stay.

        Example:
            >>> plane.redact(b'{"error":"cannot read /srv/models/fraud/1/model.onnx"}')   # doctest: +SKIP
            b'{"error":"cannot read .../model.onnx"}'
        """
        return redact(body.decode(errors="replace"), (self.auth.token,)).encode()

    async def lookup(self, name: str, version: str | None) -> ServedModel:
        """The served version for metadata and config (loaded on demand under a budget, as for inference).

        Example:
            >>> (await plane.lookup("mlp", None)).config()   # doctest: +SKIP
        """
        served = await self.repository.acquire(name, version)
        self.repository.release(served)
        return served

    async def infer(
        self,
        name: str,
        version: str | None,
        decode: Callable[[Schema], Awaitable[v2.InferRequest]],
        encode: Callable[[Answer], Awaitable[T]],
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> T:
        """One inference request, whatever the transport: the one path HTTP and gRPC both take.

        Takes the model (loading it on demand under a budget, never evicted while in use), decodes
        with the transport's ``decode`` (given the model's schema, so that a declared datatype other
        than the model's is refused before the data is read), checks declared datatypes (the strict
        wire), runs it through
        the batcher, keeps the requested outputs, logs the payload, mirrors shadow traffic, encodes
        with the transport's ``encode`` and counts it all in the model's metrics and trace spans
        (``headers`` carry the caller's W3C ``traceparent``). Errors propagate for the transport to
        answer (:func:`error_response`, :func:`aimass.server.grpc.grpc_status`).

        Example:
            >>> await plane.infer("mlp", None, decode, encode)   # doctest: +SKIP
        """
        served = await self.repository.acquire(name, version)  # loads it on demand under a budget
        try:
            if self.tracing is None:
                return await self._infer_counted(served, version, decode, encode, None)
            marks = Marks(start=trace_clock())
            token = MARKS.set(marks)
            status = 500
            try:
                result = await self._infer_counted(served, version, decode, encode, marks)
                status = 200
                return result
            except Exception as e:
                status = error_response(e)[0]
                raise
            finally:
                MARKS.reset(token)
                self.tracing.record(headers, served.name, served.version, marks, status)
        finally:
            self.repository.release(served)

    async def _infer_counted(
        self,
        served: ServedModel,
        requested: str | None,
        decode: Callable[[Schema], Awaitable[v2.InferRequest]],
        encode: Callable[[Answer], Awaitable[T]],
        marks: Marks | None,
    ) -> T:
        mm = served.metrics
        mm.requests.inc()
        mm.in_flight.inc()
        start = time.perf_counter()
        try:
            request = await decode(served.model.schema)
            if marks is not None:
                marks.decoded = trace_clock()
            v2.check_datatypes(request.inputs, served.model.schema)  # strict wire: V2 requests are not cast
            outputs = await served.infer(request.inputs)
            if marks is not None:
                marks.inferred = trace_clock()
            if request.outputs is not None:
                outputs = _requested(served, outputs, [o.name for o in request.outputs])
            request_id = request.id
            plog = self.payload_log
            if plog is not None and plog.sampled():  # queued for a background writer; never waits
                request_id = request_id or new_request_id()  # the client gets it back to join labels on
                plog.log(served.name, served.version, request_id, request.inputs, outputs, time.perf_counter() - start)
            shadow = self.shadow
            if shadow is not None and (rule := shadow.pick(served.name, requested, served.version)) is not None:
                shadow.mirror(rule, request.inputs, outputs, request_id)  # in the background; never answers
            result = await encode(Answer(served, request, outputs, request_id))
            if marks is not None:
                marks.encoded = trace_clock()
            return result
        except Exception as e:
            mm.failure(error_response(e)[0])
            raise
        finally:
            mm.in_flight.dec()
            mm.request_seconds.observe(time.perf_counter() - start)

    async def offload(self, size: int, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` for a message of ``size`` bytes: inline up to :data:`~aimass.protocol.v2.LEAN_BODY_SIZE`,
        above it in a worker thread, so the event loop keeps serving (health checks included) meanwhile.

        The one rule for decoding and encoding large messages, HTTP and gRPC alike; small ones stay
        inline, where a thread hop would cost more than the work.

        Example:
            >>> await plane.offload(len(body), v2.decode_request, body)   # doctest: +SKIP
        """
        if size <= v2.LEAN_BODY_SIZE:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def _requested(served: ServedModel, outputs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The outputs a request asked for, in its order; SchemaError naming one the model lacks."""
    try:
        return {n: outputs[n] for n in names}
    except KeyError as e:
        name = e.args[0]
        raise SchemaError(
            f"model {served.name!r} has no output {name!r}; outputs are {served.output_names}", tensor=name
        ) from None


class HasDataPlane(Protocol):
    """A transport's app that carries a data plane (:class:`aimass.server.app.App` does)."""

    dataplane: DataPlane


def dataplane_of(served: DataPlane | HasDataPlane) -> DataPlane:
    """The data plane itself, or the one an app carries.

    Example:
        >>> dataplane_of(create_app({"mlp": "mlp.onnx"})).max_elements   # doctest: +SKIP
        16777216
    """
    return served if isinstance(served, DataPlane) else served.dataplane


class PlaneAttribute(Generic[T]):
    """An attribute of the data plane, read and set through the app that carries it.

    Example:
        >>> class App:
        ...     tracing = PlaneAttribute[ServerTracing | None]()   # app.tracing is app.dataplane.tracing
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, app: HasDataPlane, owner: type | None = None) -> T:
        return cast(T, getattr(app.dataplane, self.name))

    def __set__(self, app: HasDataPlane, value: T) -> None:
        setattr(app.dataplane, self.name, value)
