"""The V2 protocol over gRPC (KServe ``GRPCInferenceService`` and Triton's extensions) on ``grpc.aio``.

It serves a :class:`~aimass.server.dataplane.DataPlane` (or the app that carries one): the same
repository, batcher, limits, metrics and bearer token as HTTP, on the same event loop. Methods:
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (typed ``contents``
or ``raw_input_contents``; outputs answered raw, as Triton does), ModelConfig, RepositoryIndex,
RepositoryModelLoad and RepositoryModelUnload; the others answer UNIMPLEMENTED. The token travels
in the metadata, ``authorization: Bearer <token>``, on all but ServerLive and ServerReady.

Errors map to gRPC in one place, :func:`grpc_status`: the HTTP status and the redacted message the
HTTP app would answer (:func:`~aimass.server.http.error_response`), and the code beside that status
in :data:`aimass.errors.GRPC_CODES` (503 UNAVAILABLE with a ``retry-after`` trailer). Messages over
``max_message_size`` (default: the HTTP body limit) are refused by gRPC with RESOURCE_EXHAUSTED.

ModelInfer messages arrive and leave as bytes: above :data:`aimass.protocol.v2.LEAN_BODY_SIZE` they
are read and written in a worker thread (:meth:`aimass.server.dataplane.DataPlane.offload`), their
tensors decoded by numpy without one Python object per value (:mod:`aimass.protocol.grpc.codec`),
and an input whose declared datatype is not the model's is refused before its data is read.

Example:
    >>> app = create_app({"mlp": "mlp.onnx"})                       # doctest: +SKIP
    >>> serve_http_and_grpc(app, port=8000, grpc_port=8001)         # doctest: +SKIP
    >>> background = BackgroundServer(app)                            # doctest: +SKIP
    >>> background.port, background.stop()                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aimass import __version__
from aimass.dependencies import require
from aimass.errors import AimassError, ModelNotFound, ServiceUnavailable
from aimass.protocol import documents, v2
from aimass.schema import Schema
from aimass.server.dataplane import Answer, DataPlane, HasDataPlane, dataplane_of
from aimass.server.http import error_response

__all__ = ["BackgroundServer", "InferenceServicer", "create_server", "grpc_status", "serve_http_and_grpc"]

log = logging.getLogger("aimass.server")

_AUTH_KEY = "authorization"
_SERVICE = "GRPCInferenceService"
# Methods whose messages the servicer reads and writes itself (as bytes), so grpc does not parse or
# serialize them on the event loop.
_BYTES_METHODS = frozenset({"ModelInfer"})
# Background servers run until stopped, referenced or not (grpc stops a server it garbage-collects).
_RUNNING: set[BackgroundServer] = set()


def _grpc() -> Any:
    return require("grpc", feature="the gRPC server", extra="grpc", package="grpcio")


def _stubs() -> tuple[Any, Any, Any]:
    _grpc()
    from aimass.protocol.grpc import codec, grpc_service_pb2, grpc_service_pb2_grpc

    return codec, grpc_service_pb2, grpc_service_pb2_grpc


def grpc_status(exc: BaseException, app: DataPlane | HasDataPlane | None = None) -> tuple[str, str, int]:
    """The one mapping from an exception to a gRPC answer: ``(code name, message, HTTP status)``.

    The message is what the HTTP app answers in ``{"error": ...}`` (redacted by ``app`` when given);
    the code is the one beside that HTTP status in :data:`aimass.errors.GRPC_CODES`.

    Example:
        >>> grpc_status(ModelNotFound("unknown model 'x'; models are ['mlp']"))
        ('NOT_FOUND', "unknown model 'x'; models are ['mlp']", 404)
    """
    status, body = error_response(exc)
    if app is not None:
        body = dataplane_of(app).redact(body)
    message = str(orjson.loads(body)["error"])
    code = exc.grpc_code if isinstance(exc, AimassError) else "INTERNAL"
    return code, message, status


def _headers(context: Any) -> list[tuple[bytes, bytes]]:
    """gRPC metadata as HTTP-style header pairs (for the W3C ``traceparent`` of a traced request)."""
    return [
        (key.encode(), value.encode() if isinstance(value, str) else value)
        for key, value in context.invocation_metadata() or ()
    ]


class InferenceServicer:
    """``GRPCInferenceService`` over a data plane (a duck-typed servicer: the stubs are imported only when serving)."""

    def __init__(self, app: DataPlane | HasDataPlane) -> None:
        self.plane = dataplane_of(app)
        self.repository = self.plane.repository
        self._codec, self._pb, _ = _stubs()
        self._grpc = _grpc()
        self._server_meta = self._codec.server_metadata_response(
            documents.server_metadata("aimass", __version__, documents.EXTENSIONS)
        )
        # Metadata and config messages per loaded version (built once: clients such as perf_analyzer
        # ask before every run); an unloaded version drops out with its ServedModel.
        self._metadata: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()
        self._configs: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

        # Triton's methods that aimass does not serve answer UNIMPLEMENTED (streaming, statistics,
        # shared memory, trace and log settings).
        service = self._pb.DESCRIPTOR.services_by_name[_SERVICE]
        for method in service.methods:
            if not hasattr(self, method.name):
                setattr(self, method.name, self._unimplemented(method.name))

    # -- plumbing -------------------------------------------------------------------------------

    def _unimplemented(self, name: str) -> Callable[[Any, Any], Awaitable[None]]:
        async def handler(request: Any, context: Any) -> None:
            await context.abort(self._grpc.StatusCode.UNIMPLEMENTED, f"aimass does not implement {name}")

        return handler

    def _authorize(self, context: Any) -> None:
        if not self.plane.auth.required:  # no token set: skip reading the metadata on every call
            return
        value = None
        for key, val in context.invocation_metadata() or ():
            if key == _AUTH_KEY:
                value = val.encode() if isinstance(val, str) else val
                break
        self.plane.auth.check(value)

    async def _abort(self, context: Any, exc: BaseException) -> None:
        code, message, status = grpc_status(exc, self.plane)
        if isinstance(exc, ServiceUnavailable):
            log.debug("gRPC request refused: %s", message)  # overload refusals come by the thousand
            if exc.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
        elif status >= 500:
            log.error("gRPC request failed: %s", message, exc_info=exc)
        await context.abort(getattr(self._grpc.StatusCode, code), message)

    async def _answer(self, context: Any, build: Callable[[], Awaitable[Any]], *, auth: bool = True) -> Any:
        try:
            if auth:
                self._authorize(context)
            return await build()
        except Exception as e:
            await self._abort(context, e)

    # -- health and metadata ----------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return self._pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return self._pb.ServerReadyResponse(ready=self.repository.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            try:
                self.repository.servable(request.name, request.version or None)  # or loadable on demand
            except ModelNotFound:
                return self._pb.ModelReadyResponse(ready=False)
            return self._pb.ModelReadyResponse(ready=True)

        return await self._answer(context, build)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            return self._server_meta

        return await self._answer(context, build)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            served = await self.plane.lookup(request.name, request.version or None)
            versions = tuple(self.repository.versions(request.name))
            cached = self._metadata.get(served)
            if cached is None or cached[0] != versions:  # versions change as others load and unload
                cached = (versions, self._codec.model_metadata_response(served.metadata(list(versions))))
                self._metadata[served] = cached
            return cached[1]

        return await self._answer(context, build)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            served = await self.plane.lookup(request.name, request.version or None)
            config = self._configs.get(served)
            if config is None:
                config = self._configs[served] = self._codec.model_config_response(served.config())
            return config

        return await self._answer(context, build)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: bytes, context: Any) -> bytes | None:
        codec, plane = self._codec, self.plane

        def decode_now(schema: Schema) -> v2.InferRequest:
            return codec.decode_infer_request(message, max_elements=plane.max_elements, schema=schema)

        async def decode(schema: Schema) -> v2.InferRequest:
            return await plane.offload(len(request), decode_now, schema)

        def encode_now(answer: Answer) -> bytes:
            served = answer.served
            response = codec.encode_infer_response(
                answer.outputs, model_name=served.name, model_version=served.version, request_id=answer.request_id
            )
            return bytes(response.SerializeToString())

        async def encode(answer: Answer) -> bytes:
            size = sum(getattr(value, "nbytes", 0) for value in answer.outputs.values())
            return await plane.offload(size, encode_now, answer)

        try:
            self._authorize(context)
            # The message came as bytes (see _add_servicer): a large one is read in a worker thread.
            message = await plane.offload(len(request), codec.read_infer_request, request)
            head = message.head
            headers = () if plane.tracing is None else _headers(context)
            # The one inference path (aimass.server.dataplane.DataPlane.infer): budget, batcher, strict wire,
            # payload logs, shadow traffic, metrics and spans are the same as over HTTP.
            return await plane.infer(head.model_name, head.model_version or None, decode, encode, headers)
        except Exception as e:
            await self._abort(context, e)
            return None

    # -- repository ---------------------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            entries = self.repository.index(ready_only=request.ready)
            # Load-failure reasons come from backends and may name files: redacted like errors.
            redacted = orjson.loads(self.plane.redact(orjson.dumps(entries)))
            return self._codec.repository_index_response(redacted)

        return await self._answer(context, build)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            await self.repository.aload(request.model_name)  # in a worker thread; under a budget, within it
            return self._pb.RepositoryModelLoadResponse()

        return await self._answer(context, build)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        async def build() -> Any:
            self.repository.unload(request.model_name)
            return self._pb.RepositoryModelUnloadResponse()

        return await self._answer(context, build)


def create_server(
    app: DataPlane | HasDataPlane,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    max_message_size: int | None = None,
    reuse_port: bool = False,
) -> tuple[Any, int]:
    """A ``grpc.aio`` server for ``app`` bound to ``host:port`` (0: any free port), and the bound port.

    Call it on the event loop that serves ``app`` and ``await server.start()``. ``max_message_size``
    (bytes; default the app's HTTP ``max_body_size``) bounds what is received and sent. gRPC would
    let a second server share a port silently (SO_REUSEPORT); ``reuse_port=False`` refuses instead.
    """
    grpc = _grpc()
    size = max_message_size or dataplane_of(app).max_body_size
    options = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.aio.server(options=options)
    _add_servicer(InferenceServicer(app), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpc says only "Failed to bind"
        raise OSError(f"cannot listen for gRPC on {host}:{port} ({e}): is the port in use?") from None
    return server, bound


def _add_servicer(servicer: InferenceServicer, server: Any) -> None:
    """Register ``servicer``'s methods as the generated ``add_GRPCInferenceServiceServicer_to_server`` does,
    except that the methods in ``_BYTES_METHODS`` take and return bytes: grpc would parse and serialize
    their messages on the event loop, where a 64 MiB message of small integers holds it for seconds.
    """
    grpc = _grpc()
    _, pb, _ = _stubs()
    service = pb.DESCRIPTOR.services_by_name[_SERVICE]
    handlers = {}
    for method in service.methods:
        kind = ("stream" if method.client_streaming else "unary", "stream" if method.server_streaming else "unary")
        handler = getattr(grpc, "{}_{}_rpc_method_handler".format(*kind))  # as the generated code picks it
        if method.name in _BYTES_METHODS:
            handlers[method.name] = handler(getattr(servicer, method.name))
            continue
        request, response = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        handlers[method.name] = handler(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _event_loop_runner() -> asyncio.Runner:
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def serve_http_and_grpc(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int = 8001,
    max_message_size: int | None = None,
    uvicorn_options: dict[str, Any] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` (:func:`~aimass.server.app.create_app`'s) over HTTP (uvicorn) and gRPC side by side, on one loop.

    ``uvicorn_options`` go to ``uvicorn.Config`` (``log_level``, ``http``, ...); ``sock``, a socket
    already bound for HTTP (:func:`aimass.server.listen.bind`). Stops on SIGINT/SIGTERM (uvicorn's
    handlers), then lets gRPC calls in flight finish for up to 5 s.
    """
    import uvicorn

    options = {k: v for k, v in (uvicorn_options or {}).items() if k != "loop"}

    async def main() -> None:
        server, _ = create_server(app, host=host, port=grpc_port, max_message_size=max_message_size)
        await server.start()
        try:
            await uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options)).serve(
                sockets=[sock] if sock is not None else None
            )
        finally:
            await server.stop(grace=5)

    # uvicorn re-raises the SIGINT it captured once it has shut down; uvicorn.run swallows it, so do we.
    with contextlib.suppress(KeyboardInterrupt), _event_loop_runner() as runner:
        runner.run(main())


class BackgroundServer:
    """A gRPC server for ``app`` on its own event-loop thread: for tests, notebooks and benchmarks.

    The app must not be served from another event loop at the same time (its batchers belong to one).

    Example:
        >>> server = BackgroundServer(create_app({"mlp": "mlp.onnx"}))      # doctest: +SKIP
        >>> Model.load(f"grpc://127.0.0.1:{server.port}/mlp")                # doctest: +SKIP
        >>> server.stop()                                                    # doctest: +SKIP
    """

    def __init__(
        self, app: DataPlane | HasDataPlane, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        self.app = app
        self.host = host
        self._runner = _event_loop_runner()
        self._loop = self._runner.get_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aimass-grpc", daemon=True)
        self._thread.start()

        async def start() -> tuple[Any, int]:
            server, bound = create_server(app, host=host, port=port, **options)
            await server.start()
            return server, bound

        self._server, self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=30)
        _RUNNING.add(self)

    @property
    def target(self) -> str:
        """``host:port`` for a gRPC channel."""
        return f"{self.host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (calls in flight get ``grace`` seconds) and end the loop thread."""
        _RUNNING.discard(self)
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(timeout=grace + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._runner.close()
