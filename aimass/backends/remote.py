"""A model on a V2 inference server (aimass, Triton, MLServer, KServe) as one more backend.

``Model.load("http://host:8000/v2/models/NAME[/versions/V]")`` reads the schema from the server's
model metadata; ``predict`` then validates locally (same messages as a local model) and sends the
request with :mod:`aimass.protocol.v2`, the codec the aimass server decodes with. Inputs above
``binary_threshold`` bytes go as binary tensors when the server announces the
``binary_tensor_data`` extension (Triton and aimass do, MLServer does not).

HTTP: one pooled ``httpx.Client`` (and one ``httpx.AsyncClient`` per event loop for ``apredict``),
timeouts, and retries on connection errors only (a request that reached the server is never
sent twice). Server errors come back typed: 400/422 -> :class:`~aimass.errors.SchemaError` with the
server's message and tensor name, 404 -> :class:`~aimass.errors.ModelNotFound`, anything else ->
:class:`~aimass.errors.RemoteError` carrying the status. A remote's answer is its own text (a
proxy's error page, a secret): only a V2 error document's message is passed on (redacted, capped);
any other answer never enters a message, which names the status and the host
(:func:`remote_failure`), and its first 200 characters, redacted, go to ``RemoteError.detail`` and
the log.

``options``: ``timeout`` (seconds, default 30), ``connect_timeout`` (5), ``retries`` (3),
``binary_threshold`` (bytes, default 65536; ``None`` never), ``binary_output`` (default: when the
server supports it), ``auth_token`` (see below), ``headers``, ``endpoints``
(base URLs of more servers of the same model: requests spread by least outstanding requests, dead
ones ejected, see :mod:`aimass.backends.balancer`), and for tests
or embedding ``transport`` / ``async_transport`` (httpx transports). :func:`mount` routes a base
URL to an in-process ASGI app (no socket), which a saved remote package also finds.

Credentials go only where the user sends them. The client token is the ``auth_token`` option
(per-model config: ``AIMASS_<NAME>_AUTH_TOKEN`` or ``auth_token`` in aimass.toml), else the env
var ``AIMASS_CLIENT_TOKEN`` for a URL the caller gave (``Model.load(url)``, config). The server's
own token (``AIMASS_SERVER_TOKEN``, ``aimass serve``) is never read here. A saved remote package
(``remote.json``) names its URL but cannot carry credentials: its options may only be
``timeout``, ``connect_timeout``, ``retries`` and ``binary_threshold`` (anything else, e.g.
``headers``, ``auth_token``, ``endpoints``, is refused with :class:`~aimass.errors.IntegrityError`);
loading it logs a warning naming the URL, and ``AIMASS_CLIENT_TOKEN`` is sent to it only when its
``host[:port]`` is listed in ``AIMASS_CLIENT_TOKEN_HOSTS`` (comma-separated; a host without a port
means the scheme's default port) or the caller opts in with ``options={"auth_token": ...}``.
Redirects are never followed, so no header travels to a host the server names.

Example:
    >>> from aimass import Model
    >>> m = Model.load("http://127.0.0.1:8000/v2/models/fraud", options={"timeout": 2})   # doctest: +SKIP
    >>> m.predict(rows)                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.backends.transport import SharedTransport
from aimass.dependencies import require
from aimass.errors import (
    IntegrityError,
    ModelLoadError,
    ModelNotFound,
    RemoteError,
    SchemaError,
    UnsupportedOperation,
)
from aimass.files import read_json
from aimass.protocol import documents
from aimass.redaction import REASON_LIMIT, cut, redact
from aimass.schema import Schema

__all__ = [
    "InProcessTransport",
    "RemoteBackend",
    "mount",
    "package_token",
    "raise_for_status",
    "refusal_text",
    "remote_failure",
    "unmount",
]

_URL = re.compile(
    r"^(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/v2/models/(?P<name>[^/?#]+)(?:/versions/(?P<version>[^/?#]+))?/?$"
)
_TENSOR_IN_MESSAGE = re.compile(r"^(?:input|output) '([^']+)'")
_ARTIFACT = "remote.json"
_MOUNTS: dict[str, Any] = {}
#: The env var holding the client's bearer token (never the server's ``AIMASS_SERVER_TOKEN``).
CLIENT_TOKEN_ENV = "AIMASS_CLIENT_TOKEN"
#: Comma-separated ``host[:port]`` list: the hosts a package URL may point at to get ``AIMASS_CLIENT_TOKEN``.
CLIENT_TOKEN_HOSTS_ENV = "AIMASS_CLIENT_TOKEN_HOSTS"
# What a saved remote package may set: nothing that carries credentials or picks other hosts.
_PACKAGE_OPTIONS = ("timeout", "connect_timeout", "retries", "binary_threshold")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MESSAGE_LIMIT = 500  # characters of a V2 refusal's message passed on (a schema error names shapes)
_log = logging.getLogger("aimass")


def _httpx() -> Any:
    return require("httpx", feature="remote models", extra="server")


def mount(base_url: str, app: Any) -> None:
    """Route requests for ``base_url`` (e.g. ``"http://mass.test"``) to the ASGI ``app`` in this process.

    Example:
        >>> mount("http://mass.test", create_app({"mlp": model}))      # doctest: +SKIP
        >>> Model.load("http://mass.test/v2/models/mlp").predict(x)     # doctest: +SKIP
    """
    _MOUNTS[base_url.rstrip("/")] = InProcessTransport(app)


def unmount(base_url: str) -> None:
    """Undo :func:`mount`."""
    transport = _MOUNTS.pop(base_url.rstrip("/"), None)
    if transport is not None:
        transport.shutdown()


class InProcessTransport(SharedTransport):
    """An httpx transport (sync and async) that calls an ASGI app on a private event-loop thread.

    ``httpx.ASGITransport`` is async-only and runs the app on the caller's loop; this one gives
    sync clients an in-process server too, and keeps the app on one loop for every caller.
    """

    def __init__(self, app: Any) -> None:
        httpx = _httpx()
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aimass-inprocess", daemon=True)
        self._thread.start()

    async def _call(self, request: Any) -> Any:
        httpx = _httpx()
        inner = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        response = await self._asgi.handle_async_request(inner)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def handle_request(self, request: Any) -> Any:
        request.read()
        return asyncio.run_coroutine_threadsafe(self._call(request), self._loop).result()

    async def handle_async_request(self, request: Any) -> Any:
        await request.aread()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._call(request), self._loop))

    def shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def _v2_message(response: Any) -> tuple[str | None, str | None]:
    """The message and tensor of a V2 error document (``{"error": ...}``); None for any other answer."""
    try:
        doc = response.json()
    except ValueError:
        return None, None
    if isinstance(doc, dict):
        if "error" in doc:
            tensor = doc.get("tensor")
            return refusal_text(str(doc["error"])), tensor if isinstance(tensor, str) else None
        if "detail" in doc:  # MLServer / FastAPI validation errors
            return refusal_text(json.dumps(doc["detail"])), None
    return None, None


def refusal_text(message: str) -> str:
    """A V2 refusal's message (bad tensor, unknown model) as passed on: redacted and capped.

    The refusal is the protocol's answer and names the tensor, so it is kept (HTTP and gRPC), but
    like every text a remote server chooses it loses paths and secrets and stops at 500 characters.

    Example:
        >>> refusal_text("input 'x': expected FP32 shape [-1, 4], got INT8 shape [2]")
        "input 'x': expected FP32 shape [-1, 4], got INT8 shape [2]"
    """
    return cut(redact(message[: 4 * _MESSAGE_LIMIT]), _MESSAGE_LIMIT)


def remote_failure(url: str, host: str, status: str, status_code: int, answer: str) -> RemoteError:
    """The :class:`~aimass.errors.RemoteError` for a remote server's error answer, for HTTP and gRPC alike.

    The message names the URL, the status and the host, never the answer: a model server relays
    the message to its own clients and its index, and the answer may hold anything (a proxy's
    error page, ``DB_PASSWORD=...``). The answer's first characters, redacted, go to
    ``RemoteError.detail`` and to one warning in the log.

    Example:
        >>> e = remote_failure("http://h/v2/models/m", "h:80", "HTTP 403", 403, "DB_PASSWORD=hunter2")
        >>> str(e), e.detail
        ('http://h/v2/models/m: HTTP 403 from remote server h:80', 'DB_PASSWORD=<redacted>')
    """
    detail = cut(redact(answer[: 4 * REASON_LIMIT]))
    if detail:
        _log.warning("remote server %s answered %s: %s", host, status, detail)
    return RemoteError(f"{redact(url)}: {status} from remote server {host}", status_code=status_code, detail=detail)


def raise_for_status(response: Any, url: str) -> None:
    """Turn a V2 server's error answer into the aimass exception for its status (see :func:`remote_failure`)."""
    status = response.status_code
    if status < 300:
        return
    origin = _host(url)
    if status < 400:  # never followed: the request's headers would go where the server says
        where = cut(redact(response.headers.get("location", "?")), _MESSAGE_LIMIT)
        raise RemoteError(f"{redact(url)}: HTTP {status} from remote server {origin}: redirect to {where} not followed")
    message, tensor = _v2_message(response)
    if message is not None:
        if status == 404 or (status == 400 and "unknown model" in message.lower()):  # Triton answers 400
            raise ModelNotFound(message)
        if status in (400, 422):
            if tensor is None and (found := _TENSOR_IN_MESSAGE.match(message)):
                tensor = found.group(1)
            raise SchemaError(message, tensor=tensor)
    failure = remote_failure(url, origin, f"HTTP {status}", status, response.text or response.reason_phrase)
    if status == 404:  # not a V2 answer, but still: nothing at that URL
        raise ModelNotFound(str(failure)) from None
    raise failure


def _broken_answer(url: str, error: Exception) -> RemoteError:
    # A protocol error's text may quote the bytes the remote sent: kept out of the message, like an answer.
    return remote_failure(url, _host(url), f"a broken answer ({type(error).__name__})", 502, str(error))


def _origin(url: Any) -> tuple[str, int]:
    return url.host, url.port or _DEFAULT_PORTS[url.scheme]


def _host(url: str) -> str:
    """``host:port`` of an absolute URL (what an error message names instead of a remote's answer)."""
    try:
        target = _httpx().URL(url)
        return "{}:{}".format(*_origin(target))
    except (KeyError, ValueError):  # a relative URL or an unknown scheme: the URL names it already
        return "?"


def _token_host_allowed(url: str, env: Mapping[str, str]) -> bool:
    """Whether ``url``'s host:port is listed in ``AIMASS_CLIENT_TOKEN_HOSTS`` (no port: the scheme's default)."""
    httpx = _httpx()
    target = httpx.URL(url)
    host, port = _origin(target)
    for entry in env.get(CLIENT_TOKEN_HOSTS_ENV, "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            listed = httpx.URL(f"{target.scheme}://{entry}")
        except httpx.InvalidURL:
            continue
        if listed.userinfo or listed.path not in ("", "/"):
            continue
        if _origin(listed) == (host, port):
            return True
    return False


def _package_source(path: Path, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL and options of a saved remote package, refusing one that tries to carry credentials.

    The package chooses only where the model lives and harmless client settings; the env client
    token goes along only to hosts the user listed, or when the caller passes ``auth_token``.
    """
    where = str(path)
    saved = read_json(path, IntegrityError, where=f"remote package file {where}")
    if not isinstance(saved, dict) or not isinstance(saved.get("url"), str):
        raise IntegrityError(f"remote package file {where}: expected an object with a string 'url'")
    unknown = sorted(set(saved) - {"url", "options"})
    if unknown:
        raise IntegrityError(f"remote package file {where}: unexpected key {unknown[0]!r} (only 'url' and 'options')")
    url: str = saved["url"]
    saved_options = saved.get("options") or {}
    if not isinstance(saved_options, dict):
        raise IntegrityError(f"remote package file {where}: 'options' must be an object")
    for key, value in saved_options.items():
        if key not in _PACKAGE_OPTIONS:
            raise IntegrityError(
                f"remote package file {where}: option {key!r} is not allowed in a package "
                f"(only {', '.join(_PACKAGE_OPTIONS)}; credentials, headers and endpoints come from the caller)"
            )
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric and value >= 0) and not (key == "binary_threshold" and value is None):
            raise IntegrityError(f"remote package file {where}: option {key!r} must be a non-negative number")
    if _URL.match(url) is None:
        raise IntegrityError(
            f"remote package file {where}: {url!r} is not a V2 model URL "
            "(expected http[s]://host[:port]/v2/models/NAME[/versions/V])"
        )
    httpx = _httpx()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise IntegrityError(f"remote package file {where}: invalid URL {url!r} ({e})") from None
    if parsed.userinfo:
        raise IntegrityError(f"remote package file {where}: the URL may not carry credentials")
    merged = {**saved_options, **options}  # the caller's options win over the saved ones
    token, sending = package_token(options, lambda: _token_host_allowed(url, os.environ))
    merged.update(token)
    _log.warning("package %s points at remote server %s; %s", path.parent, url, sending)
    return url, merged


def package_token(options: Mapping[str, Any], host_listed: Callable[[], bool]) -> tuple[dict[str, Any], str]:
    """The token a model loaded from a saved remote package sends, and how the load warning says so.

    The one rule for HTTP and gRPC remote packages: the caller's ``auth_token`` option wins; else
    ``AIMASS_CLIENT_TOKEN`` goes only when ``host_listed()`` (its host is in
    ``AIMASS_CLIENT_TOKEN_HOSTS``); else no token. Returns options to merge, and the reason.

    Example:
        >>> package_token({}, lambda: False)[0]
        {'auth_token': None}
    """
    if "auth_token" in options:
        return {}, "sending the auth_token the caller passed" if options["auth_token"] else "sending no token"
    token = os.environ.get(CLIENT_TOKEN_ENV)
    if token and host_listed():
        return {"auth_token": token}, f"sending {CLIENT_TOKEN_ENV} (its host is listed in {CLIENT_TOKEN_HOSTS_ENV})"
    return {"auth_token": None}, (
        f"not sending {CLIENT_TOKEN_ENV}: list its host[:port] in {CLIENT_TOKEN_HOSTS_ENV} "
        "or pass options={'auth_token': ...} to send one"
    )


class RemoteBackend(Backend):
    """A model behind a V2 HTTP endpoint."""

    name: ClassVar[str] = "remote"
    framework: ClassVar[str] = "httpx"
    extra: ClassVar[str] = "server"

    def __init__(self, url: str, options: Mapping[str, Any], schema: Schema | None) -> None:
        match = _URL.match(url)
        if match is None:
            raise ModelLoadError(
                f"not a V2 model URL: {url!r} (expected http[s]://host[:port]/v2/models/NAME[/versions/V])"
            )
        httpx = _httpx()
        self.url = url.rstrip("/")
        self.base_url = match["base"]
        self.model_name = match["name"]
        self.model_version = match["version"]
        self._options = dict(options)
        timeout = float(options.get("timeout", 30.0))
        self._timeout = httpx.Timeout(timeout, connect=float(options.get("connect_timeout", min(5.0, timeout))))
        self._retries = int(options.get("retries", 3))
        threshold = options.get("binary_threshold", 64 * 1024)
        self._threshold = None if threshold is None else int(threshold)
        headers = dict(options.get("headers") or {})
        # A URL the caller gave gets the env token; a package's URL only what load() allowed.
        token = options.get("auth_token", os.environ.get(CLIENT_TOKEN_ENV))
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._headers = headers
        if options.get("endpoints") and not options.get("transport"):  # more servers of this model: balance
            from aimass.backends.balancer import BalancingTransport

            options = {**options, "transport": BalancingTransport([self.base_url, *options["endpoints"]])}
        self._transport = options.get("transport") or _MOUNTS.get(self.base_url)
        self._async_transport = options.get("async_transport") or options.get("transport") or _MOUNTS.get(self.base_url)
        self._limits = httpx.Limits(
            max_connections=int(options.get("max_connections", 100)), max_keepalive_connections=20
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=self._timeout,
            headers=headers,
            transport=self._transport,
            limits=self._limits,
            follow_redirects=False,  # the auth header never follows a redirect to another host
        )
        self._aclients: dict[int, Any] = {}
        self._infer_path = f"{self.url}/infer"

        server_url = f"{self.base_url}/v2"
        server = self._get_json(server_url, missing_ok=True)
        info = documents.ServerMetadata() if server is None else documents.parse_server_metadata(server, server_url)
        self.binary_supported = info.supports(documents.BINARY_TENSOR_DATA)
        flag = options.get("binary_output")
        self._binary_output = self.binary_supported if flag is None else bool(flag) and self.binary_supported
        self.metadata: dict[str, Any] = self._get_json(self.url) or {}
        self.schema = schema or documents.schema_from_metadata(self.metadata, self.url)
        self._output_names = self.schema.output_names

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def accepts(cls, source: Any) -> bool:
        if isinstance(source, str):
            return source.startswith(("http://", "https://"))
        return isinstance(source, Path) and source.name == _ARTIFACT

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> RemoteBackend:
        if isinstance(source, Path) or (
            isinstance(source, str) and not source.startswith(("http://", "https://")) and source.endswith(_ARTIFACT)
        ):
            source, options = _package_source(Path(source), options or {})
        backend = cls(str(source), options or {}, schema)
        if device != "cpu":
            # The server owns the hardware; the client side has nothing to move.
            backend.device = device
        return backend

    # -- HTTP -----------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        httpx = _httpx()
        for attempt in range(self._retries + 1):
            try:
                return self._client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt == self._retries:
                    raise RemoteError(f"cannot reach {self.base_url}: {e}", status_code=503) from e
                time.sleep(0.05 * 2**attempt)
            except httpx.TimeoutException as e:
                raise RemoteError(f"{url}: no answer within the timeout ({e})", status_code=504) from e
            except httpx.HTTPError as e:
                raise _broken_answer(url, e) from e
        raise AssertionError("unreachable")

    async def _asend(self, method: str, url: str, **kwargs: Any) -> Any:
        httpx = _httpx()
        client = self._aclient()
        for attempt in range(self._retries + 1):
            try:
                return await client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt == self._retries:
                    raise RemoteError(f"cannot reach {self.base_url}: {e}", status_code=503) from e
                await asyncio.sleep(0.05 * 2**attempt)
            except httpx.TimeoutException as e:
                raise RemoteError(f"{url}: no answer within the timeout ({e})", status_code=504) from e
            except httpx.HTTPError as e:
                raise _broken_answer(url, e) from e
        raise AssertionError("unreachable")

    def _aclient(self) -> Any:
        # An AsyncClient belongs to the event loop it first ran on.
        key = id(asyncio.get_running_loop())
        client = self._aclients.get(key)
        if client is None:
            client = _httpx().AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout,
                headers=self._headers,
                transport=self._async_transport,
                limits=self._limits,
                follow_redirects=False,
            )
            self._aclients = {key: client}
        return client

    def _get_json(self, url: str, missing_ok: bool = False) -> Any:
        response = self._send("GET", url)
        if missing_ok and response.status_code == 404:
            return None
        raise_for_status(response, url)
        try:
            return response.json()
        except ValueError as e:
            raise RemoteError(f"{url}: the answer is not JSON ({e})") from None

    # -- inference ------------------------------------------------------------------------------

    def _encode(self, inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
        from aimass.protocol import v2

        # BYTES go binary whenever the server takes it: encoded files need not be UTF-8, which JSON needs.
        binary = (
            self.binary_supported
            and self._threshold is not None
            and (
                sum(a.nbytes for a in inputs.values()) >= self._threshold
                or any(a.dtype.kind == "O" for a in inputs.values())
            )
        )
        return v2.encode_request(inputs, binary=binary, binary_output=self._binary_output)

    def _decode(self, response: Any) -> dict[str, np.ndarray]:
        from aimass.protocol import v2

        raise_for_status(response, self._infer_path)
        header = response.headers.get(v2.HEADER_LENGTH)
        outputs = v2.decode_response(response.content, None if header is None else int(header)).outputs
        if set(outputs) >= set(self._output_names):
            # Schema order, whatever order the server answered in.
            return {name: outputs[name] for name in self._output_names} | outputs
        return outputs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        body, headers = self._encode(inputs)
        _trace_context(headers)
        return self._decode(self._send("POST", self._infer_path, content=body, headers=headers))

    async def arun(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` on the async client: no thread per request."""
        body, headers = self._encode(inputs)
        _trace_context(headers)
        return self._decode(await self._asend("POST", self._infer_path, content=body, headers=headers))

    def save(self, directory: Path) -> list[str]:
        # A remote package points at the service; tokens, headers and transports are not written to disk.
        keep = {k: v for k, v in self._options.items() if k in _PACKAGE_OPTIONS}
        (directory / _ARTIFACT).write_text(json.dumps({"url": self.url, "options": keep}, indent=2), encoding="utf-8")
        return [_ARTIFACT]

    def to(self, device: str) -> RemoteBackend:
        if device == self.device:
            return self
        raise UnsupportedOperation(
            f"a remote model runs where its server put it; choose the device on the server, not with to({device!r})"
        )

    def close(self) -> None:
        """Close the connection pools."""
        self._client.close()


def _trace_context(headers: dict[str, str]) -> None:
    """Add the W3C ``traceparent`` of the current span when this process uses OpenTelemetry.

    Nothing is imported for it: a process that never imported ``opentelemetry.trace`` has no
    spans to continue, and pays one dictionary lookup.
    """
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import propagate

        propagate.inject(headers)
