"""HTTP refusals, their one JSON answer, the server's bearer-token check, and reading and writing ASGI messages.

Shared by the V2 app (:mod:`aimass.server.app`), the dashboard (:mod:`aimass.server.dashboard`) and
the gRPC servicer (:mod:`aimass.server.grpc`), so a token is checked, and an error answered, the same
way on every route and transport.

Example:
    >>> auth = BearerToken("s3cret")
    >>> auth.check(b"Bearer s3cret")
    >>> error_response(HTTPError("no route GET /x", 404))
    (404, b'{"error":"no route GET /x"}')
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from aimass.errors import AimassError, SchemaError

__all__ = [
    "BearerToken",
    "HTTPError",
    "Receive",
    "Scope",
    "Send",
    "allow_method",
    "body_lengths",
    "error_response",
    "read_body",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HTTPError(AimassError):
    """An HTTP-level refusal that is not about the model: 401, 404 route, 405, 413."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def error_response(exc: BaseException) -> tuple[int, bytes]:
    """The one mapping from an exception to an HTTP status and ``{"error": ...}`` body.

    Example:
        >>> from aimass.errors import SchemaError
        >>> error_response(SchemaError("input 'x': expected FP32 shape [-1, 4], got int8 shape [2]", tensor="x"))
        (400, b'{"error":"input \\'x\\': expected FP32 shape [-1, 4], got int8 shape [2]","tensor":"x"}')
    """
    if isinstance(exc, AimassError):
        status, message = exc.status_code, str(exc)
    else:
        status, message = 500, f"{type(exc).__name__}: {exc}"
    doc: dict[str, Any] = {"error": message}
    tensor = getattr(exc, "tensor", None)
    if tensor is not None:
        doc["tensor"] = tensor
    return status, orjson.dumps(doc)


class BearerToken:
    """``Authorization: Bearer <token>`` when a token is set; everything passes when it is None.

    Compared in constant time. HTTP headers, gRPC metadata and the dashboard all go through it.

    Example:
        >>> BearerToken(None).check(None)          # no token: open
        >>> BearerToken("s3cret").required
        True
    """

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        self._expected = f"Bearer {self.token}".encode() if self.token else None

    @property
    def required(self) -> bool:
        """Whether requests must carry the token."""
        return self._expected is not None

    def check(self, authorization: bytes | None) -> None:
        """Refuse (HTTPError 401) an ``Authorization`` value that is not ``Bearer <token>``."""
        expected = self._expected
        if expected is None or (authorization is not None and hmac.compare_digest(authorization, expected)):
            return
        raise HTTPError("missing or wrong bearer token (Authorization: Bearer <token>)", 401)

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """:meth:`check` on the ``authorization`` header of ASGI-style ``headers``."""
        if self._expected is None:
            return
        self.check(next((value for key, value in headers if key == b"authorization"), None))


def body_lengths(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, int | None]:
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


def allow_method(method: str, allowed: str, path: str) -> None:
    """HTTPError 405 unless ``method`` is the ``allowed`` one."""
    if method != allowed:
        raise HTTPError(f"method {method} not allowed on {path}; use {allowed}", 405)


async def read_body(receive: Receive, limit: int, content_length: int | None) -> bytes:
    """The whole request body; HTTPError 413 past ``limit`` bytes (from Content-Length alone when it says so)."""
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


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """One whole ASGI response with its Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})
