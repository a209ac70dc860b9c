"""OpenAI-compatible routes on ``aimass serve``: ``POST /v1/embeddings`` and ``GET /v1/models``.

Clients of embedding servers (text-embeddings-inference, infinity) call the OpenAI API; these routes
let them call aimass unchanged, e.g. ``OpenAI(base_url="http://127.0.0.1:8000/v1",
api_key=token).embeddings.create(model="minilm", input=["a text"])``.

Which models answer: those whose schema takes text and makes an embedding, decided from the schema
alone (:func:`embeds_text`: one BYTES input of shape ``[-1]`` and an FP32 output ``embedding`` of
shape ``[-1, d]``). A text classifier has no matching OpenAI route, so it is not served here (it
stays on V2). ``/v1/models`` lists the embedding models loaded now (under a memory budget, one not
loaded yet still answers ``/v1/embeddings``, loading on demand).

``/v1/embeddings`` takes ``input`` (a string or a list of up to 2048 non-empty strings; token-id
arrays are refused), ``model`` (the served name), ``encoding_format`` (``float`` or ``base64``:
little-endian float32, what the ``openai`` client asks for by default) and ``dimensions`` (refused
unless it is the model's own width: aimass does not shorten embeddings). ``usage`` counts the
tokens the model's tokenizer made (0 for a model without one). A request takes the same path as a
V2 request (:meth:`~aimass.server.dataplane.DataPlane.infer`: batching, limits, metrics, payload
logs, monitors, shadow traffic) and the same bearer token (the client's ``api_key``).

Errors have OpenAI's shape and status codes: ``{"error": {"message", "type", "param", "code"}}``,
redacted like every error the server sends.

Example:
    >>> routes = OpenAIRoutes(app.dataplane)                      # doctest: +SKIP
    >>> await routes.handle("POST", "/v1/embeddings", scope, receive, send)   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from aimass.errors import AimassError, ModelNotFound, ServiceUnavailable
from aimass.protocol import v2
from aimass.schema import DType, Schema
from aimass.server.dataplane import Answer, DataPlane
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
from aimass.server.token_batching import REQUEST_TOKENS

__all__ = ["MAX_INPUTS", "OpenAIError", "OpenAIRoutes", "embeds_text"]

log = logging.getLogger("aimass.server")

#: Texts per request, as OpenAI's own limit.
MAX_INPUTS = 2048
EMBEDDING = "embedding"

_JSON = [(b"content-type", b"application/json")]


class OpenAIError(AimassError):
    """A request the OpenAI routes refuse, naming the request field (``param``) at fault."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status_code: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.status_code = status_code


class _EmbeddingsRequest(BaseModel):
    """The body of ``POST /v1/embeddings`` (unknown fields such as ``user`` are ignored, as OpenAI does)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


def embeds_text(schema: Schema) -> int | None:
    """The embedding width when ``schema`` is text in and an embedding out; None otherwise.

    Example:
        >>> s = Schema(inputs=[{"name": "text", "dtype": "BYTES", "shape": [-1]}],
        ...            outputs=[{"name": "embedding", "dtype": "FP32", "shape": [-1, 384]}])
        >>> embeds_text(s)
        384
    """
    if len(schema.inputs) != 1 or schema.inputs[0].dtype != DType.BYTES or schema.inputs[0].shape != [-1]:
        return None
    out = next((t for t in schema.outputs if t.name == EMBEDDING), None)
    if out is None or out.dtype != DType.FP32 or len(out.shape) != 2 or out.shape[0] != -1:
        return None
    return out.shape[1]


def error_document(exc: BaseException) -> tuple[int, bytes]:
    """``exc`` as an HTTP status and OpenAI's error body (``type`` from the status, ``param`` and ``code`` when known).

    Example:
        >>> error_document(OpenAIError("input is empty", param="input"))[1]
        b'{"error":{"message":"input is empty","type":"invalid_request_error","param":"input","code":null}}'
    """
    status, body = error_response(exc)
    message = orjson.loads(body)["error"]
    code = getattr(exc, "code", None)
    if code is None:
        code = {401: "invalid_api_key", 404: "model_not_found" if isinstance(exc, ModelNotFound) else None}.get(status)
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    elif status in (429, 503) and isinstance(exc, ServiceUnavailable):
        kind = "rate_limit_error" if status == 429 else "server_error"
    param = getattr(exc, "param", None) or (getattr(exc, "tensor", None) and "input")
    doc = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return status, orjson.dumps(doc)


class OpenAIRoutes:
    """``/v1/embeddings`` and ``/v1/models`` over a :class:`~aimass.server.dataplane.DataPlane`.

    Example:
        >>> app.openai = OpenAIRoutes(app.dataplane)   # create_app does this   # doctest: +SKIP
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def handle(self, method: str, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request under ``/v1/``, errors included, in OpenAI's shape."""
        try:
            await self._route(method, path, scope, receive, send)
        except Exception as e:
            await self.error(send, e)

    async def _route(self, method: str, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        self.dataplane.auth.check_headers(scope["headers"])
        parts = path.strip("/").split("/")
        if parts[1:] == ["embeddings"]:
            allow_method(method, "POST", path)
            return await self._embeddings(scope, receive, send)
        if parts[1:2] == ["models"] and len(parts) <= 3:
            allow_method(method, "GET", path)
            if len(parts) == 2:
                data = [self._model_card(name) for name in self._embedding_models()]
                return await send_response(send, 200, orjson.dumps({"object": "list", "data": data}), _JSON)
            served = await self.dataplane.lookup(parts[2], None)
            if embeds_text(served.model.schema) is None:
                raise _not_embedding(parts[2])
            return await send_response(send, 200, orjson.dumps(self._model_card(parts[2])), _JSON)
        raise HTTPError(f"no route {method} {path}", 404)

    async def error(self, send: Send, exc: BaseException) -> None:
        """The OpenAI-shaped answer to ``exc``, redacted (no token, no server path)."""
        status, body = error_document(exc)
        if status >= 500 and not isinstance(exc, ServiceUnavailable):
            log.error("request failed: %s", body.decode(errors="replace"), exc_info=exc)
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            extra.append((b"retry-after", str(retry_after).encode()))
        await send_response(send, status, self.dataplane.redact(body), [*_JSON, *extra])

    def _embedding_models(self) -> list[str]:
        names = {s.name for s in self.dataplane.repository.loaded() if embeds_text(s.model.schema) is not None}
        return sorted(names)

    @staticmethod
    def _model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "aimass"}

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_length, _ = body_lengths(scope["headers"])
        body = await read_body(receive, self.dataplane.max_body_size, content_length)
        request = _parse(body)
        texts = _texts(request.input)
        name = request.model

        async def decode(schema: Schema) -> v2.InferRequest:
            width = embeds_text(schema)
            if width is None:
                raise _not_embedding(name)
            if request.dimensions is not None and request.dimensions != width:
                raise OpenAIError(
                    f"model {name!r} makes {width}-dimensional embeddings and does not shorten them: leave out "
                    f"'dimensions' or ask for {width}, got {request.dimensions}",
                    param="dimensions",
                )
            return v2.InferRequest(inputs={schema.inputs[0].name: np.array(texts, dtype=object)})

        async def encode(answer: Answer) -> bytes:
            vectors = np.ascontiguousarray(answer.outputs[EMBEDDING], dtype="<f4")
            data: list[dict[str, Any]]
            if request.encoding_format == "base64":
                data = [
                    {"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode()}
                    for i, v in enumerate(vectors)
                ]
            else:
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            tokens = counter[0]
            doc = {
                "object": "list",
                "data": data,
                "model": answer.served.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)

        counter = [0]  # the text model adds the tokens its tokenizer made (aimass.server.token_batching)
        token = REQUEST_TOKENS.set(counter)
        try:
            payload = await self.dataplane.infer(name, None, decode, encode, scope["headers"])
        finally:
            REQUEST_TOKENS.reset(token)
        await send_response(send, 200, payload, _JSON)


def _parse(body: bytes) -> _EmbeddingsRequest:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OpenAIError(f"the body is not valid JSON: {e}") from None
    try:
        return _EmbeddingsRequest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else None
        got = f", got {err['input']!r}" if "input" in err and err["type"] != "missing" else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        raise OpenAIError(f"'{field or 'body'}': {message}{got}"[:500], param=field) from None


def _texts(value: str | list[Any]) -> list[str]:
    """The texts of ``input``: a string or a list of strings; token-id arrays are refused by name."""
    items = [value] if isinstance(value, str) else value
    if not items:
        raise OpenAIError("'input' is empty: send a string or a list of strings", param="input")
    if len(items) > MAX_INPUTS:
        raise OpenAIError(f"'input' has {len(items)} texts; at most {MAX_INPUTS} per request", param="input")
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise OpenAIError(f"'input' element {i} is an empty string", param="input")
            continue
        if isinstance(item, int) or (isinstance(item, list) and all(isinstance(t, int) for t in item)):
            raise OpenAIError(
                "'input' holds token ids: this server takes text only (a string or a list of strings) and "
                "tokenizes it with the model's own tokenizer",
                param="input",
            )
        raise OpenAIError(f"'input' element {i} is a {type(item).__name__}, not a string", param="input")
    return items


def _not_embedding(name: str) -> OpenAIError:
    return OpenAIError(
        f"model {name!r} does not make text embeddings (its schema is not text in, 'embedding' out), so "
        "/v1/embeddings cannot serve it; call it over V2: POST /v2/models/<name>/infer",
        param="model",
        code="model_not_supported",
    )
