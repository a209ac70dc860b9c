"""The V2 (Open Inference Protocol) model server as a lean ASGI app.

Endpoints: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]``
(metadata), ``.../ready``, ``.../config`` (Triton-style model config), ``POST .../infer``, the
repository extension (``POST /v2/repository/index``, ``/v2/repository/models/{name}/load`` and
``/unload``) and ``GET /metrics``. A plain ASGI callable rather than a framework router: the
routes are few and fixed, and skipping a router's request objects and middleware stack is a
measurable share of a small model's request time (see docs/serving.md).

Errors map to HTTP in one place, :func:`error_response`, from each exception's ``status_code``
(:mod:`aimass.errors`): unknown model/version 404, bad tensor or malformed body 400, body too
large 413, model failure 500 with its message, model queue full 503 (with ``Retry-After``), request
timeout 504. The body is always ``{"error": "..."}``; what goes out never holds the bearer token or
a server file-system path (paths are cut to their last component, see :meth:`App.redact`).

Before any route, :mod:`aimass.server.browser` refuses a Host outside the allow-list (400; health
endpoints excepted) and a request that changes state which a page on another site could have sent
(foreign ``Origin`` 403, form or text Content-Type 415). Requests that arrive too slowly are cut
below the app, in uvicorn's protocol (:mod:`aimass.server.deadlines`), and counted in its metrics.

Example:
    >>> from aimass import Model
    >>> from aimass.server import create_app
    >>> app = create_app({"mlp": Model.load("mlp.onnx")}, max_batch_size=64)   # doctest: +SKIP
    >>> # uvicorn.run(app) or: aimass serve mlp.onnx
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson

from aimass import __version__
from aimass.errors import SchemaError, ServiceUnavailable
from aimass.model import Model
from aimass.protocol import documents, v2
from aimass.redaction import redact
from aimass.schema import Schema
from aimass.server.browser import BrowserPolicy, changes_state
from aimass.server.deadlines import STATE_KEY, SlowClients
from aimass.server.http import BearerToken, HTTPError, error_response
from aimass.server.metrics import Metrics
from aimass.server.payload_log import PayloadLog, new_request_id
from aimass.server.policies import PolicyRunner
from aimass.server.repository import BatchingConfig, Budget, Limits, Repository, ServedModel
from aimass.server.settings import DEFAULT_MAX_BODY_SIZE, ServerSettings, build_settings
from aimass.server.shadow import Shadow
from aimass.server.tracing import MARKS, Marks, ServerTracing
from aimass.server.tracing import now as trace_clock

if TYPE_CHECKING:
    from aimass.server.dashboard import Dashboard

__all__ = ["DEFAULT_MAX_BODY_SIZE", "Answer", "App", "HTTPError", "create_app", "error_response"]

log = logging.getLogger("aimass.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EXTENSIONS = list(documents.EXTENSIONS)  # what GET /v2 announces

_JSON = [(b"content-type", b"application/json")]
_BINARY_CT = v2.BINARY_CONTENT_TYPE.encode()


T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """What a transport encodes: the model that answered, the decoded request, outputs, request id."""

    served: ServedModel
    request: v2.InferRequest
    outputs: dict[str, np.ndarray]
    request_id: str | None


class App:
    """ASGI application serving a :class:`~aimass.server.repository.Repository` over V2.

    Build it with :func:`create_app`.
    """

    def __init__(
        self,
        repository: Repository,
        *,
        metrics: Metrics,
        executor: ThreadPoolExecutor,
        auth_token: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_elements: int = v2.DEFAULT_MAX_ELEMENTS,
        browser: BrowserPolicy | None = None,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.executor = executor
        self.max_body_size = max_body_size
        self.max_elements = max_elements
        self.auth = BearerToken(auth_token)  # the one token check: HTTP, gRPC metadata, dashboard
        # Host allow-list and cross-site rules (aimass.server.browser); the default takes any Host.
        self.browser = browser or BrowserPolicy()
        # Connections cut by the protocol's deadlines (aimass.server.deadlines), counted via the lifespan state.
        self.slow_clients = SlowClients(metrics.registry)
        self._server_meta = orjson.dumps(documents.server_metadata("aimass", __version__, EXTENSIONS))
        # The read-only pages at / (aimass.server.dashboard), set by create_app; None: no dashboard.
        self.dashboard: Dashboard | None = None
        # Canary analyses and drift-triggered updates (aimass.server.policies), set by create_app; None: none.
        self.policies: PolicyRunner | None = None
        # Request/response records (aimass.server.payload_log), set by create_app; None: not logged.
        self.payload_log: PayloadLog | None = None
        # Requests mirrored to candidate versions (aimass.server.shadow), set by create_app; None: none.
        self.shadow: Shadow | None = None
        # OpenTelemetry spans of inference requests (aimass.server.tracing), set by create_app; None: off.
        self.tracing: ServerTracing | None = None

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state = scope.get("state")
                if state is not None:  # the server's protocol reports slow clients it cut through it
                    state[STATE_KEY] = self.slow_clients.cut
                if self.dashboard is not None:
                    self.dashboard.start()  # samples the metrics every few seconds, never per request
                if self.policies is not None:
                    self.policies.start()  # looks at canaries and drift every few seconds
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.policies is not None:
                    await self.policies.stop()
                if self.payload_log is not None:  # complete the open log files
                    await asyncio.get_running_loop().run_in_executor(None, self.payload_log.close)
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            browser = self.browser
            # Health answers nothing and probes address a pod by its IP: no Host check there.
            if browser.allowed_hosts is not None and not path.startswith("/v2/health/"):
                browser.check_host(scope["headers"])
            if changes_state(method):
                browser.check_state_change(scope["headers"], method=method, path=path)
            parts = path.strip("/").split("/")
            if parts[0] != "v2":
                if path == "/metrics" and method == "GET":
                    self._check_auth(scope)
                    body, content_type = self.metrics.render()
                    return await _send(send, 200, body, [(b"content-type", content_type.encode())])
                if self.dashboard is not None:  # only paths outside /v2 and /metrics reach it
                    page = await self.dashboard.handle(method, path, scope)
                    if page is not None:
                        return await _send(send, *page)
                raise HTTPError(f"no route {method} {path}", 404)
            n = len(parts)
            if n >= 3 and parts[1] == "models":
                return await self._models(parts, method, scope, receive, send)
            if n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
                _allow(method, "GET", path)
                ok = parts[2] == "live" or self.repository.ready()
                return await _send(send, 200 if ok else 503, b"")
            self._check_auth(scope)
            if n == 1:
                _allow(method, "GET", path)
                return await _send(send, 200, self._server_meta, _JSON)
            if parts[1] == "repository":
                return await self._repository(parts, method, scope, receive, send)
            raise HTTPError(f"no route {method} {path}", 404)
        except Exception as e:
            await self._error(send, e)

    async def _error(self, send: Send, exc: BaseException) -> None:
        status, body = error_response(exc)
        if isinstance(exc, ServiceUnavailable):
            # Refusals under overload come by the thousand: no traceback, no error-level log for each.
            log.debug("request refused: %s", body.decode(errors="replace"))
        elif status >= 500:
            log.error("request failed: %s", body.decode(errors="replace"), exc_info=exc)
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            extra.append((b"retry-after", str(retry_after).encode()))
        await _send(send, status, self.redact(body), [*_JSON, *extra])

    def redact(self, body: bytes) -> bytes:
        """An error body without the bearer token, server file-system paths or secret-looking values.

        The full text stays in the server's log; :func:`aimass.redaction.redact` says what is removed.

        A path is cut to ``.../<last component>`` when its first component is a directory at this
        machine's root (``/home``, ``/tmp``, ``/srv`` ...); URL paths such as ``/v2/models/x`` stay.

        Example:
            >>> app.redact(b'{"error":"cannot read /srv/models/fraud/1/model.onnx"}')   # doctest: +SKIP
            b'{"error":"cannot read .../model.onnx"}'
        """
        return redact(body.decode(errors="replace"), (self.auth.token,)).encode()

    def _check_auth(self, scope: Scope) -> None:
        self.auth.check_headers(scope["headers"])

    # -- /v2/models -----------------------------------------------------------------------------

    async def _models(self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send) -> None:
        self._check_auth(scope)
        name, rest = parts[2], parts[3:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else "" if not rest else None
        path = scope["path"]
        if action == "infer":
            _allow(method, "POST", path)
            return await self._infer(name, version, scope, receive, send)
        if action == "":
            _allow(method, "GET", path)
            served = await self.lookup(name, version)
            doc = served.metadata(self.repository.versions(name))
            return await _send(send, 200, orjson.dumps(doc), _JSON)
        if action == "ready":
            _allow(method, "GET", path)
            self.repository.servable(name, version)
            return await _send(send, 200, b"")
        if action == "config":
            _allow(method, "GET", path)
            return await _send(send, 200, orjson.dumps((await self.lookup(name, version)).config()), _JSON)
        if action == "monitor":  # served-traffic monitoring (aimass.server.monitoring), computed off the loop
            _allow(method, "GET", path)
            loop = asyncio.get_running_loop()
            doc = await loop.run_in_executor(self.executor, self.repository.monitor_report, name, version)
            return await _send(send, 200, orjson.dumps(doc), _JSON)
        raise HTTPError(f"no route {method} {path}", 404)

    async def lookup(self, name: str, version: str | None) -> ServedModel:
        """The served version for metadata and config (loaded on demand under a budget, as for inference).

        Example:
            >>> (await app.lookup("mlp", None)).config()   # doctest: +SKIP
        """
        served = await self.repository.acquire(name, version)
        self.repository.release(served)
        return served

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        content_length, header_length = _lengths(scope["headers"])
        # The whole body is read before the model is taken: under a budget, a slow client must not
        # hold a loaded model (and every load waiting for room) while it sends.
        body = await _read_body(receive, self.max_body_size, content_length)

        async def decode(schema: Schema) -> v2.InferRequest:
            # v2 parses a large body's big arrays in slices that each hold the GIL for a few ms: off
            # the loop (see offload), the loop keeps answering (health checks included) meanwhile.
            return await self.offload(len(body), self._decode, body, header_length, schema)

        async def encode(answer: Answer) -> tuple[bytes, int | None]:
            return v2.encode_response(
                answer.outputs,
                model_name=answer.served.name,
                model_version=answer.served.version,
                request_id=answer.request_id,
                binary=answer.request.binary_outputs(list(answer.outputs)),
            )

        payload, json_length = await self.infer(name, version, decode, encode, scope["headers"])
        if json_length is None:
            await _send(send, 200, payload, _JSON)
        else:
            headers = [(b"content-type", _BINARY_CT), (b"inference-header-content-length", str(json_length).encode())]
            await _send(send, 200, payload, headers)

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
            >>> await app.infer("mlp", None, decode, encode)   # doctest: +SKIP
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

    def _decode(self, body: bytes, header_length: int | None, schema: Schema) -> v2.InferRequest:
        return v2.decode_request(body, header_length, max_elements=self.max_elements, schema=schema)

    async def offload(self, size: int, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` for a message of ``size`` bytes: inline up to :data:`~aimass.protocol.v2.LEAN_BODY_SIZE`,
        above it in a worker thread, so the event loop keeps serving (health checks included) meanwhile.

        The one rule for decoding and encoding large messages, HTTP and gRPC alike; small ones stay
        inline, where a thread hop would cost more than the work.

        Example:
            >>> await app.offload(len(body), v2.decode_request, body)   # doctest: +SKIP
        """
        if size <= v2.LEAN_BODY_SIZE:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- /v2/repository -------------------------------------------------------------------------

    async def _repository(self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        _allow(method, "POST", path)
        body = await _read_body(receive, self.max_body_size, None)
        if parts[2:] == ["index"]:
            try:
                options = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError as e:
                raise SchemaError(f"malformed JSON request: {e}") from None
            ready = documents.parse_index_request(options)
            # Load-failure reasons come from backends and may name files: redacted like errors.
            return await _send(send, 200, self.redact(orjson.dumps(self.repository.index(ready_only=ready))), _JSON)
        if len(parts) == 5 and parts[2] == "models" and parts[4] in ("load", "unload"):
            if not body.strip():  # a bare POST is what a page on another site can send: it must say more
                self.browser.check_state_change(scope["headers"], method=method, path=path, empty_body=True)
            name = parts[3]
            if parts[4] == "load":
                await self.repository.aload(name)  # in a worker thread; under a budget, within it
            else:
                self.repository.unload(name)
            return await _send(send, 200, b"{}", _JSON)
        raise HTTPError(f"no route {method} {path}", 404)


def _lengths(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, int | None]:
    """``Content-Length`` and ``Inference-Header-Content-Length``, checked."""
    content_length, header_length = None, None
    for key, value in headers:
        if key == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = -1
            if content_length < 0:
                raise SchemaError(f"Content-Length must be a non-negative integer, got {value!r}")
        elif key == b"inference-header-content-length":
            try:
                header_length = int(value)
            except ValueError:
                raise SchemaError(f"Inference-Header-Content-Length must be an integer, got {value!r}") from None
    return content_length, header_length


def _requested(served: ServedModel, outputs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The outputs a request asked for, in its order; SchemaError naming one the model lacks."""
    try:
        return {n: outputs[n] for n in names}
    except KeyError as e:
        name = e.args[0]
        raise SchemaError(
            f"model {served.name!r} has no output {name!r}; outputs are {served.output_names}", tensor=name
        ) from None


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise HTTPError(f"method {method} not allowed on {path}; use {allowed}", 405)


async def _read_body(receive: Receive, limit: int, content_length: int | None) -> bytes:
    if content_length is not None and content_length > limit:
        raise HTTPError(f"request body of {content_length} bytes exceeds the limit of {limit} bytes", 413)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise HTTPError(f"request body exceeds the limit of {limit} bytes", 413)
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError("client disconnected", 499)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    models: Mapping[str, Model | str | os.PathLike[str] | Mapping[str, Model | str | os.PathLike[str]]] | None = None,
    *,
    repository: str | os.PathLike[str] | None = None,
    model_options: Mapping[str, Any] | None = None,
    settings: ServerSettings | None = None,
    **knobs: Any,
) -> App:
    """Build the ASGI app over explicit models and/or a repository directory ``<repo>/<name>/<version>/``.

    ``models`` maps names to ``Model`` objects, model files or packages (or to ``{version: source}``);
    ``model_options`` go to the backend of every model loaded from a path. How it serves them is
    ``settings`` (:class:`~aimass.server.settings.ServerSettings`, which documents each knob), with
    ``knobs`` (keywords of the same names: ``max_batch_size=8``, ``threads=4``, ``pin=["fraud"]``)
    applied over it. The names are those of the ``aimass serve`` flags; the names used before them
    (``max_concurrency``, ``pinned``, ``tracing``, ``payload_log``, ``payload_*``) still work, with a
    DeprecationWarning. ``workers`` counts server processes, which one app is not: its model thread
    pool is ``threads``. ``auth_token`` None reads ``AIMASS_SERVER_TOKEN``; ``allowed_hosts`` None
    takes any Host (``aimass serve`` lists the loopback names when it listens on loopback, see
    :func:`~aimass.server.browser.allowed_hosts_for`).

    Example:
        >>> app = create_app({"mlp": "mlp.onnx"}, max_queue_delay="500us", auth_token="s3cret")   # doctest: +SKIP
        >>> app = create_app(repository="models/", settings=ServerSettings(threads=4, pin=["fraud"]))  # doctest: +SKIP
    """
    if "workers" in knobs:
        raise TypeError(
            "create_app() builds one process's app: 'workers' counts server processes (aimass serve --workers, "
            "serve_workers); the model thread pool is 'threads'"
        )
    s = build_settings(settings, knobs, where="create_app")
    if models is None and repository is None:
        raise ValueError("create_app needs models, a repository directory, or both")
    threads = s.threads or min(8, (os.cpu_count() or 1) + 2)
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aimass")
    metrics = Metrics()
    normalized: dict[str, Any] = {}
    for name, src in (models or {}).items():
        if isinstance(src, Mapping):
            normalized[name] = {str(v): s if isinstance(s, Model) else Path(s) for v, s in src.items()}
        else:
            normalized[name] = src if isinstance(src, Model) else Path(src)
    repo = Repository(
        repository,
        normalized,
        batching=BatchingConfig(s.max_batch_size, s.max_queue_delay, s.instances),
        executor=executor,
        metrics=metrics,
        model_options=model_options,
        limits=Limits(max_queue_size=s.max_queue_size, request_timeout=s.request_timeout or None),
        budget=Budget(max_loaded_models=s.max_loaded_models, memory_budget=s.memory_budget),
        pinned=s.pin,
        warmup=s.warmup,
        monitor=s.monitor,
    )
    token = s.auth_token if s.auth_token is not None else os.environ.get("AIMASS_SERVER_TOKEN") or None
    app = App(
        repo,
        metrics=metrics,
        executor=executor,
        auth_token=token,
        max_body_size=s.max_body_size,
        max_elements=s.max_elements,
        browser=BrowserPolicy(s.allowed_hosts, s.allowed_origins),
    )
    if s.log_payloads is not None:
        plog = s.log_payloads
        if not isinstance(plog, PayloadLog):
            plog = PayloadLog(
                plog,
                sample_rate=s.log_sample_rate,
                max_queue_bytes=s.log_max_queue_bytes,
                max_bytes=s.log_max_bytes,
                max_age=s.log_max_age,
            )
        plog.bind_metrics(metrics.registry)
        app.payload_log = plog
    if s.trace:
        app.tracing = s.trace if isinstance(s.trace, ServerTracing) else ServerTracing()
    if s.shadow:
        app.shadow = Shadow(
            s.shadow,
            repo,
            registry=metrics.registry,
            payload_log=app.payload_log,
            max_in_flight=s.shadow_max_in_flight,
            max_bytes=s.shadow_max_bytes,
        )
    if s.policies is not None:  # monitoring that acts, on the library served (aimass.server.policies)
        logs = app.payload_log.destination if app.payload_log is not None else None
        app.policies = PolicyRunner(s.policies, repo, registry=metrics.registry, payload_log=logs)
    if s.dashboard:
        from aimass.server.dashboard import server_dashboard

        app.dashboard = server_dashboard(repo, metrics, auth=app.auth)
    return app
