"""The dashboard's routes: the page and its files at ``/`` and ``/dashboard/static/``, JSON under ``/dashboard/api/``.

:class:`Dashboard` answers ``GET``/``HEAD`` only (it changes nothing). The page and its script,
style sheet and this list of routes hold no data and need no token; every ``/dashboard/api/``
document needs the server's bearer token when the server has one (the same check as the V2
API). ``/dashboard/api/session`` says whether a token is needed, so the page asks for it before
its first data request. Library reads (files, S3) run in a worker thread, off the event loop.

Routes (all JSON): ``session``, ``overview``, ``models``, ``models/{name}``,
``models/{name}/versions/{version}``, ``live?window=300`` (server only), ``drift`` (server only).

Example:
    >>> from aimass.store import Store
    >>> app = ui_app(Store("models/"), token=None)   # an ASGI app: uvicorn.run(app)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from aimass.errors import AimassError
from aimass.package import is_package
from aimass.redaction import reason, redact
from aimass.server.browser import BrowserPolicy
from aimass.server.dashboard.catalog import Catalog
from aimass.server.dashboard.live import LiveSampler
from aimass.server.http import BearerToken, HTTPError, error_response
from aimass.store import Store

if TYPE_CHECKING:
    from aimass.server.metrics import Metrics
    from aimass.server.repository import Repository

__all__ = ["API", "STATIC", "Dashboard", "Response", "server_dashboard", "ui_app"]

log = logging.getLogger("aimass.server")
Scope = MutableMapping[str, Any]
Response = tuple[int, bytes, list[tuple[bytes, bytes]]]
API = "/dashboard/api/"
STATIC = "/dashboard/static/"

_FILES = {  # name -> content type: the only files served (nothing is looked up from a request's path)
    "index.html": b"text/html; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}
# The page loads only its own script and style; SVG arrives as data in JSON, never as script.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *_COMMON]


def _file(name: str) -> bytes:
    return resources.files("aimass.server.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """The read-only dashboard over a :class:`Catalog` (and, in a server, a :class:`LiveSampler`).

    ``auth`` is the bearer-token check (the server passes its own). :meth:`handle` returns None for
    paths that are not the dashboard's.

    Example:
        >>> board = Dashboard(Catalog(store=Store("models/")), auth=BearerToken(None))   # doctest: +SKIP
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        auth: BearerToken,
        live: LiveSampler | None = None,
        title: str = "aimass",
    ) -> None:
        self.catalog = catalog
        self.live = live
        self.auth = auth
        self.title = title
        self._files: dict[str, bytes] = {}

    def start(self) -> None:
        """Start sampling live metrics (on the running event loop); a no-op without a server."""
        if self.live is not None:
            self.live.start()

    async def handle(self, method: str, path: str, scope: Scope) -> Response | None:
        """The response to ``method path``, or None when the path is not the dashboard's."""
        found = await self._handle(method, path, scope)
        if found is not None and method == "HEAD":
            return found[0], b"", found[2]
        return found

    async def _handle(self, method: str, path: str, scope: Scope) -> Response | None:
        if path == "/" or path == "/index.html":
            _read_only(method, path)
            return self._static("index.html", [(b"content-security-policy", _CSP)])
        if path.startswith(STATIC):
            _read_only(method, path)
            name = path[len(STATIC) :]
            if name not in _FILES or name == "index.html":
                raise HTTPError(f"no dashboard file {name!r}", 404)
            return self._static(name, [(b"cache-control", b"no-cache")])
        if not path.startswith(API):
            return None
        _read_only(method, path)
        route = path[len(API) :].strip("/")
        if route == "session":
            return _json({"auth": self.auth.required, "title": self.title})
        self.auth.check_headers(scope["headers"])
        if self.live is not None:
            self.start()  # under a test client without lifespan events, the first look starts it
        try:
            doc = await self._document(route, scope)
        except Exception as e:
            return self.failure(e, route)
        return _json(doc)

    def failure(self, error: BaseException, route: str = "") -> Response:
        """A typed JSON error: ``{"error": ..., "type": ...}``, the status from the error tree, no secrets.

        An aimass error keeps its status and message; anything else (a library file that cannot be
        read, a bug) is a 500 ``InternalError`` with a short reason, its traceback in the server's log.
        Paths, the token and secret-looking values are removed (:func:`aimass.redaction.redact`).

        Example:
            >>> board.failure(ModelNotFound("unknown model 'x'"))[:2]   # doctest: +SKIP
            (404, b'{"error":"unknown model \'x\'","type":"ModelNotFound"}')
        """
        status = error_response(error)[0]
        if isinstance(error, AimassError):
            message, kind = str(error), type(error).__name__
        else:
            log.error("dashboard route %r failed", route, exc_info=error)
            message, kind = f"internal error: {reason(error)}", "InternalError"
        doc = {"error": redact(message, (self.auth.token,)), "type": kind}
        headers = list(_JSON)
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        return status, orjson.dumps(doc), headers

    def _static(self, name: str, extra: list[tuple[bytes, bytes]]) -> Response:
        body = self._files.get(name)
        if body is None:
            body = self._files[name] = _file(name)
        return 200, body, [(b"content-type", _FILES[name]), *_COMMON, *extra]

    async def _document(self, route: str, scope: Scope) -> Any:
        parts = [urllib.parse.unquote(p) for p in route.split("/")]
        catalog = self.catalog
        if parts == ["overview"]:
            return {
                "title": self.title,
                "mode": "server" if self.live is not None else "library",
                "library": catalog.store.root if catalog.store is not None and self.live is None else None,
                "live": self.live is not None,
            }
        if parts == ["models"]:
            return await asyncio.to_thread(catalog.models)
        if len(parts) == 2 and parts[0] == "models":
            return await asyncio.to_thread(catalog.model, parts[1])
        if len(parts) == 4 and parts[0] == "models" and parts[2] == "versions":
            return await asyncio.to_thread(catalog.version, parts[1], parts[3])
        if parts in (["live"], ["drift"]):
            if self.live is None:
                raise HTTPError(f"/{API.strip('/')}/{parts[0]} needs a model server (aimass serve)", 404)
            if parts == ["drift"]:
                return await asyncio.to_thread(catalog.drift)  # flushes monitors and scores windows: off the loop
            # Reading the metrics and drawing the charts is the viewer's cost: in a thread, not on the loop.
            return await asyncio.to_thread(self.live.series, _window(scope))
        raise HTTPError(f"no dashboard route {route!r}", 404)


def _window(scope: Scope) -> float:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        window = float(query.get("window", ["300"])[0])
    except ValueError:
        raise HTTPError(f"window must be a number of seconds, got {query['window'][0]!r}", 400) from None
    if not 10 <= window <= 3600:
        raise HTTPError(f"window must be between 10 and 3600 seconds, got {window:g}", 400)
    return window


def _read_only(method: str, path: str) -> None:
    if method not in ("GET", "HEAD"):
        raise HTTPError(f"method {method} not allowed on {path}: the dashboard is read-only (GET)", 405)


def _json(doc: Any) -> Response:
    return 200, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), _JSON


# -- the dashboard without a model server (aimass ui) ------------------------------------------------

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _UIApp:
    """ASGI app serving only the dashboard over a library (``aimass ui``), to the Host names ``browser`` allows."""

    def __init__(self, dashboard: Dashboard, browser: BrowserPolicy | None = None) -> None:
        self.dashboard = dashboard
        self.browser = browser or BrowserPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers: list[tuple[bytes, bytes]]
        try:
            self.browser.check_host(scope["headers"])  # a DNS-rebinding page must not read the library
            found = await self.dashboard.handle(method, path, scope)
            if found is None:
                raise HTTPError(f"no route {method} {path}", 404)
            status, body, headers = found
        except Exception as e:
            status, body, headers = self.dashboard.failure(e, path)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})


def ui_app(store: Store, *, token: str | None = None, allowed_hosts: Collection[str] | None = None) -> _UIApp:
    """An ASGI app serving the dashboard of the library ``store`` (no model server; ``token`` = bearer auth).

    ``allowed_hosts`` (None: any) is the Host allow-list (:mod:`aimass.server.browser`); ``aimass ui``
    lists the loopback names when it listens on loopback.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(ui_app(Store("s3://bucket/models")), port=8080)   # doctest: +SKIP
    """
    title = f"aimass library {store.root.rstrip('/').rsplit('/', 1)[-1]}"
    board = Dashboard(Catalog(store=store), auth=BearerToken(token), title=title)
    return _UIApp(board, BrowserPolicy(allowed_hosts))


def server_dashboard(
    repository: Repository,
    metrics: Metrics,
    *,
    auth: BearerToken,
    interval: float = 2.0,
) -> Dashboard:
    """The dashboard of a model server: its repository (a library when the root is one) and live metrics.

    Example:
        >>> board = server_dashboard(app.repository, app.metrics, auth=app.auth)  # doctest: +SKIP
    """
    root = repository.root
    store = Store(root) if root is not None and not is_package(root) else None
    return Dashboard(
        Catalog(store=store, repository=repository),
        auth=auth,
        live=LiveSampler(metrics.registry, interval=interval),
        title="aimass server",
    )
