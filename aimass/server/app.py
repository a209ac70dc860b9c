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
a server file-system path (cut to their last component: :meth:`~aimass.server.dataplane.DataPlane.redact`).

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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from aimass import __version__
from aimass.errors import SchemaError, ServiceUnavailable
from aimass.model import Model
from aimass.protocol import documents, v2
from aimass.schema import Schema
from aimass.server.browser import BrowserPolicy, changes_state
from aimass.server.dataplane import Answer, DataPlane, PlaneAttribute
from aimass.server.deadlines import STATE_KEY, SlowClients
from aimass.server.http import (
    HTTPError,
    Receive,
    Scope,
    Send,
    allow_method,
    body_lengths,
    error_response,
    read_body,
    send_response,
)
from aimass.server.metrics import Metrics
from aimass.server.openai_routes import OpenAIRoutes
from aimass.server.payload_log import PayloadLog
from aimass.server.policies import PolicyRunner
from aimass.server.repository import BatchingConfig, Budget, Limits, Repository
from aimass.server.settings import DEFAULT_MAX_BODY_SIZE, ServerSettings, build_settings
from aimass.server.shadow import Shadow
from aimass.server.tracing import ServerTracing

if TYPE_CHECKING:
    from aimass.server.dashboard import Dashboard

__all__ = ["DEFAULT_MAX_BODY_SIZE", "Answer", "App", "HTTPError", "create_app", "error_response"]

log = logging.getLogger("aimass.server")


EXTENSIONS = list(documents.EXTENSIONS)  # what GET /v2 announces

_JSON = [(b"content-type", b"application/json")]
_BINARY_CT = v2.BINARY_CONTENT_TYPE.encode()


class App:
    """ASGI application serving a :class:`~aimass.server.repository.Repository` over V2.

    Build it with :func:`create_app`.
    """

    # The data plane's optional parts (aimass.server.dataplane), set by create_app; None: off.
    payload_log = PlaneAttribute[PayloadLog | None]()
    shadow = PlaneAttribute[Shadow | None]()
    tracing = PlaneAttribute[ServerTracing | None]()

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
        # What a request does past its wire: shared with gRPC (aimass.server.dataplane).
        self.dataplane = DataPlane(
            repository, executor=executor, auth_token=auth_token, max_body_size=max_body_size, max_elements=max_elements
        )
        self.auth = self.dataplane.auth  # the one token check: HTTP, gRPC metadata, dashboard
        self.redact = self.dataplane.redact
        self.lookup = self.dataplane.lookup
        self.infer = self.dataplane.infer
        self.offload = self.dataplane.offload
        # Host allow-list and cross-site rules (aimass.server.browser); the default takes any Host.
        self.browser = browser or BrowserPolicy()
        # Connections cut by the protocol's deadlines (aimass.server.deadlines), counted via the lifespan state.
        self.slow_clients = SlowClients(metrics.registry)
        self._server_meta = orjson.dumps(documents.server_metadata("aimass", __version__, EXTENSIONS))
        # The read-only pages at / (aimass.server.dashboard), set by create_app; None: no dashboard.
        self.dashboard: Dashboard | None = None
        # Canary analyses and drift-triggered updates (aimass.server.policies), set by create_app; None: none.
        self.policies: PolicyRunner | None = None
        self.openai = OpenAIRoutes(self.dataplane)  # /v1/embeddings and /v1/models (aimass.server.openai_routes)

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
            if parts[0] == "v1":  # OpenAI-compatible routes: their own error shape
                return await self.openai.handle(method, path, scope, receive, send)
            if parts[0] != "v2":
                if path == "/metrics" and method == "GET":
                    self._check_auth(scope)
                    body, content_type = self.metrics.render()
                    return await send_response(send, 200, body, [(b"content-type", content_type.encode())])
                if self.dashboard is not None:  # only paths outside /v2 and /metrics reach it
                    page = await self.dashboard.handle(method, path, scope)
                    if page is not None:
                        return await send_response(send, *page)
                raise HTTPError(f"no route {method} {path}", 404)
            n = len(parts)
            if n >= 3 and parts[1] == "models":
                return await self._models(parts, method, scope, receive, send)
            if n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
                allow_method(method, "GET", path)
                ok = parts[2] == "live" or self.repository.ready()
                return await send_response(send, 200 if ok else 503, b"")
            self._check_auth(scope)
            if n == 1:
                allow_method(method, "GET", path)
                return await send_response(send, 200, self._server_meta, _JSON)
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
        await send_response(send, status, self.redact(body), [*_JSON, *extra])

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
            allow_method(method, "POST", path)
            return await self._infer(name, version, scope, receive, send)
        if action == "":
            allow_method(method, "GET", path)
            served = await self.lookup(name, version)
            doc = served.metadata(self.repository.versions(name))
            return await send_response(send, 200, orjson.dumps(doc), _JSON)
        if action == "ready":
            allow_method(method, "GET", path)
            self.repository.servable(name, version)
            return await send_response(send, 200, b"")
        if action == "config":
            allow_method(method, "GET", path)
            return await send_response(send, 200, orjson.dumps((await self.lookup(name, version)).config()), _JSON)
        if action == "monitor":  # served-traffic monitoring (aimass.server.monitoring), computed off the loop
            allow_method(method, "GET", path)
            loop = asyncio.get_running_loop()
            doc = await loop.run_in_executor(self.executor, self.repository.monitor_report, name, version)
            return await send_response(send, 200, orjson.dumps(doc), _JSON)
        raise HTTPError(f"no route {method} {path}", 404)

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        content_length, header_length = body_lengths(scope["headers"])
        # The whole body is read before the model is taken: under a budget, a slow client must not
        # hold a loaded model (and every load waiting for room) while it sends.
        body = await read_body(receive, self.max_body_size, content_length)

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
            await send_response(send, 200, payload, _JSON)
        else:
            headers = [(b"content-type", _BINARY_CT), (b"inference-header-content-length", str(json_length).encode())]
            await send_response(send, 200, payload, headers)

    def _decode(self, body: bytes, header_length: int | None, schema: Schema) -> v2.InferRequest:
        return v2.decode_request(body, header_length, max_elements=self.max_elements, schema=schema)

    # -- /v2/repository -------------------------------------------------------------------------

    async def _repository(self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        allow_method(method, "POST", path)
        body = await read_body(receive, self.max_body_size, None)
        if parts[2:] == ["index"]:
            try:
                options = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError as e:
                raise SchemaError(f"malformed JSON request: {e}") from None
            ready = documents.parse_index_request(options)
            # Load-failure reasons come from backends and may name files: redacted like errors.
            index = orjson.dumps(self.repository.index(ready_only=ready))
            return await send_response(send, 200, self.redact(index), _JSON)
        if len(parts) == 5 and parts[2] == "models" and parts[4] in ("load", "unload"):
            if not body.strip():  # a bare POST is what a page on another site can send: it must say more
                self.browser.check_state_change(scope["headers"], method=method, path=path, empty_body=True)
            name = parts[3]
            if parts[4] == "load":
                await self.repository.aload(name)  # in a worker thread; under a budget, within it
            else:
                self.repository.unload(name)
            return await send_response(send, 200, b"{}", _JSON)
        raise HTTPError(f"no route {method} {path}", 404)


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
        batching=BatchingConfig.from_settings(s),  # threads per model call: aimass.server.compute
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
