"""HTTP refusals, their one JSON answer, and the server's bearer-token check.

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
from collections.abc import Iterable
from typing import Any

import orjson

from aimass.errors import AimassError

__all__ = ["BearerToken", "HTTPError", "error_response"]


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
