"""The HTTP wire client of the remote backend: V2 over HTTP with :mod:`aimass.protocol.v2` and httpx.

One pooled ``httpx.Client`` (and one ``httpx.AsyncClient`` per event loop for ``apredict``),
timeouts, and retries on connection errors only (a request that reached the server is never
sent twice unless the ``resend`` option asks for it). Server errors come back typed: 400/422 ->
:class:`~aimass.errors.SchemaError` with the server's message and tensor name, 404 ->
:class:`~aimass.errors.ModelNotFound`, anything else (an answer that does not decode included) ->
:class:`~aimass.errors.RemoteError` carrying the status. A remote's answer is its own text (a
proxy's error page, a secret): only a V2 error document's message is passed on (redacted, capped);
any other answer never enters a message, which names the status and the host
(:func:`~aimass.backends.remote_rules.remote_failure`), and its first 200 characters, redacted, go
to ``RemoteError.detail`` and the log. Redirects are never followed, so no header travels to a
host the server names. :func:`mount` routes a base URL to an in-process ASGI app (no socket).

Example:
    >>> wire = HttpWire("http://127.0.0.1:8000/v2/models/fraud", {"timeout": 2})   # doctest: +SKIP
    >>> wire.infer({"x": rows})                                                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from aimass.backends.remote_rules import (
    MESSAGE_LIMIT,
    NON_NEGATIVE,
    NON_NEGATIVE_OR_NULL,
    ModelUrl,
    PackageRules,
    client_token,
    refusal_text,
    remote_failure,
    schema_refusal,
    token_host_listed,
)
from aimass.backends.transport import SharedTransport
from aimass.dependencies import require
from aimass.errors import ModelNotFound, RemoteError
from aimass.protocol import documents
from aimass.redaction import cut, redact

__all__ = ["HttpWire", "InProcessTransport", "mount", "raise_for_status", "unmount"]

_URL = ModelUrl(
    re.compile(
        r"^(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/v2/models/(?P<name>[^/?#]+)(?:/versions/(?P<version>[^/?#]+))?/?$"
    ),
    "V2 model URL",
    "http[s]://host[:port]/v2/models/NAME[/versions/V]",
)
_MOUNTS: dict[str, Any] = {}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _httpx() -> Any:
    # The V2 codec (aimass.protocol.v2) needs orjson, from the same extra: asked for with httpx, by name.
    require("orjson", feature="remote models", extra="server")
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


# -- what the server answered ---------------------------------------------------------------------


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


def raise_for_status(response: Any, url: str) -> None:
    """Turn a V2 server's error answer into the aimass exception for its status (see ``remote_failure``)."""
    status = response.status_code
    if status < 300:
        return
    origin = _host(url)
    if status < 400:  # never followed: the request's headers would go where the server says
        where = cut(redact(response.headers.get("location", "?")), MESSAGE_LIMIT)
        raise RemoteError(f"{redact(url)}: HTTP {status} from remote server {origin}: redirect to {where} not followed")
    message, tensor = _v2_message(response)
    if message is not None:
        if status == 404 or (status == 400 and "unknown model" in message.lower()):  # Triton answers 400
            raise ModelNotFound(message)
        if status in (400, 422):
            raise schema_refusal(message, tensor)
    failure = remote_failure(url, origin, f"HTTP {status}", status, response.text or response.reason_phrase)
    if status == 404:  # not a V2 answer, but still: nothing at that URL
        raise ModelNotFound(str(failure)) from None
    raise failure


def _broken_answer(url: str, error: Exception) -> RemoteError:
    # A protocol error's text may quote the bytes the remote sent: kept out of the message, like an answer.
    return remote_failure(url, _host(url), f"a broken answer ({type(error).__name__})", 502, str(error))


# -- addresses and package rules ------------------------------------------------------------------


def _origin(url: Any) -> tuple[str, int]:
    return url.host, url.port or _DEFAULT_PORTS[url.scheme]


def _host(url: str) -> str:
    """``host:port`` of an absolute URL (what an error message names instead of a remote's answer)."""
    try:
        target = _httpx().URL(url)
        return "{}:{}".format(*_origin(target))
    except (KeyError, ValueError):  # a relative URL or an unknown scheme: the URL names it already
        return "?"


def _package_url_problem(url: str) -> str | None:
    if (problem := _URL.problem(url)) is not None:
        return problem
    httpx = _httpx()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        return f"invalid URL {url!r} ({e})"
    if parsed.userinfo:
        return "the URL may not carry credentials"
    return None


def _token_host_listed(url: str) -> bool:
    """Whether ``url``'s host:port is listed in ``AIMASS_CLIENT_TOKEN_HOSTS`` (no port: the scheme's default)."""
    httpx = _httpx()
    target = httpx.URL(url)

    def listed(entry: str) -> tuple[str, int] | None:
        try:
            parsed = httpx.URL(f"{target.scheme}://{entry}")
        except httpx.InvalidURL:
            return None
        if parsed.userinfo or parsed.path not in ("", "/"):
            return None
        return _origin(parsed)

    return token_host_listed(_origin(target), listed, os.environ)


# Statuses after which an inference is sent again (resend option): a proxy that lost the replica
# (502), no replica or a full queue (503), no answer in time (504); a broken answer reads as 502.
_RESENT = frozenset({502, 503, 504})


# -- the wire client ------------------------------------------------------------------------------


class HttpWire:
    """V2 over HTTP for one model: its metadata and inference, sync and async.

    ``options``: ``timeout`` (seconds, default 30), ``connect_timeout`` (5), ``retries`` (3),
    ``resend`` (0: inference is idempotent, so an inference whose answer was a 502, 503 or 504, a
    proxy's 500 or broke off, as when a replica's node dies behind a proxy, is sent again up to this
    many times; ``wire.resent`` counts them), ``binary_threshold`` (bytes, default 65536; ``None`` never),
    ``binary_output`` (default: when the server supports it), ``auth_token``, ``headers``,
    ``endpoints`` (more servers of this model: :mod:`aimass.backends.balancer`),
    ``max_connections``, and for tests or embedding
    ``transport`` / ``async_transport`` (httpx transports).
    """

    schemes: ClassVar[tuple[str, ...]] = ("http://", "https://")
    rules: ClassVar[PackageRules] = PackageRules(
        artifact="remote.json",
        options={
            "timeout": NON_NEGATIVE,
            "connect_timeout": NON_NEGATIVE,
            "retries": NON_NEGATIVE,
            "resend": NON_NEGATIVE,
            "binary_threshold": NON_NEGATIVE_OR_NULL,
        },
        from_caller="credentials, headers and endpoints",
        url_problem=_package_url_problem,
        host_listed=_token_host_listed,
    )

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        match = _URL.parse(url)
        httpx = _httpx()
        self.url = url.rstrip("/")
        self.base_url = match["base"]
        self.model_name: str = match["name"]
        self.model_version: str | None = match["version"]
        timeout = float(options.get("timeout", 30.0))
        self._timeout = httpx.Timeout(timeout, connect=float(options.get("connect_timeout", min(5.0, timeout))))
        self._retries = int(options.get("retries", 3))
        self._resend = int(options.get("resend", 0))
        self.resent = 0  # inferences sent again after a lost or refused answer (the resend option)
        threshold = options.get("binary_threshold", 64 * 1024)
        self._threshold = None if threshold is None else int(threshold)
        headers = dict(options.get("headers") or {})
        token = client_token(options)
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

    def metadata(self) -> dict[str, Any]:
        """The model's V2 metadata document (``GET /v2/models/NAME[/versions/V]``)."""
        return self._get_json(self.url) or {}

    # -- requests ---------------------------------------------------------------------------------

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

    # -- inference --------------------------------------------------------------------------------

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
        body, headers = v2.encode_request(inputs, binary=binary, binary_output=self._binary_output)
        _trace_context(headers)
        return body, headers

    def _decode(self, response: Any) -> dict[str, np.ndarray]:
        from aimass.protocol import v2

        raise_for_status(response, self._infer_path)
        header = response.headers.get(v2.HEADER_LENGTH)
        try:
            length = None if header is None else int(header)
            outputs: dict[str, np.ndarray] = v2.decode_response(response.content, length).outputs
        except ValueError as e:  # SchemaError (a bad document) or a bad length header
            # The server's answer is malformed, not the caller's input: a RemoteError, its text kept out.
            raise _broken_answer(self._infer_path, e) from None
        return outputs

    def _resends(self, attempt: int, response: Any = None, error: RemoteError | None = None) -> bool:
        """Whether to send an inference again (the ``resend`` option) after this answer or error; counts it.

        Sent again: a 502, 503 or 504, a broken answer, or a 500 that is not a V2 error document
        (a proxy's, as when the replica died mid-request); never a model's own error.
        """
        if attempt >= self._resend:
            return False
        if error is not None:
            lost = error.status_code in _RESENT
        else:
            status = response.status_code
            lost = status in _RESENT or (status == 500 and _v2_message(response)[0] is None)
        if lost:
            self.resent += 1
        return lost

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``POST .../infer``: the outputs in the order the server sent them."""
        body, headers = self._encode(inputs)
        for attempt in itertools.count():
            try:
                response = self._send("POST", self._infer_path, content=body, headers=headers)
            except RemoteError as e:
                if not self._resends(attempt, error=e):
                    raise
            else:
                if response.status_code < 500 or not self._resends(attempt, response=response):
                    return self._decode(response)
            time.sleep(0.05 * 2 ** min(attempt, 5))
        raise AssertionError("unreachable")

    async def ainfer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` on the async client: no thread per request."""
        body, headers = self._encode(inputs)
        for attempt in itertools.count():
            try:
                response = await self._asend("POST", self._infer_path, content=body, headers=headers)
            except RemoteError as e:
                if not self._resends(attempt, error=e):
                    raise
            else:
                if response.status_code < 500 or not self._resends(attempt, response=response):
                    return self._decode(response)
            await asyncio.sleep(0.05 * 2 ** min(attempt, 5))
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection pool (the async ones close with their event loops)."""
        self._client.close()


def _trace_context(headers: dict[str, str]) -> None:
    """Add the W3C ``traceparent`` of the current span when this process uses OpenTelemetry.

    Nothing is imported for it: a process that never imported ``opentelemetry.trace`` has no
    spans to continue, and pays one dictionary lookup.
    """
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import propagate

        propagate.inject(headers)
