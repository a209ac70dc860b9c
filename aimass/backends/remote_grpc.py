"""A model on a V2 gRPC server (aimass, Triton, MLServer, KServe) as one more backend.

``Model.load("grpc://host:8001/NAME[/versions/V]")`` (``grpcs://`` for TLS; the HTTP form's
``/v2/models/NAME`` path is accepted too) reads the schema from the server's ``ModelMetadata``;
``predict`` validates locally (same messages as a local model) and sends a ``ModelInfer`` encoded
by :mod:`aimass.protocol.grpc.codec`, the codec the aimass server decodes with. It behaves like the
HTTP remote (:mod:`aimass.backends.remote`): same schema, outputs in schema order, and server
errors come back typed: INVALID_ARGUMENT -> :class:`~aimass.errors.SchemaError` with the server's
message and tensor name, NOT_FOUND -> :class:`~aimass.errors.ModelNotFound`, anything else ->
:class:`~aimass.errors.RemoteError` carrying the matching HTTP status (UNAVAILABLE 503,
DEADLINE_EXCEEDED 504, UNAUTHENTICATED 401, ...) and naming the host, never the server's details
text (kept, redacted and cut, in ``RemoteError.detail`` and the log), as for HTTP.

One ``grpc`` channel (thread-safe) for ``predict`` and one ``grpc.aio`` channel per event loop for
``apredict``; a request is never sent twice. ``options``: ``timeout`` (seconds, default 30),
``raw`` (default True: tensors in ``raw_input_contents``; False: typed ``contents``),
``max_message_size`` (bytes, default 64 MiB), ``auth_token``, ``headers`` (more metadata) and
``root_certificates`` (PEM bytes, ``grpcs://`` only).

Credentials as for HTTP: the ``auth_token`` option, else ``AIMASS_CLIENT_TOKEN`` for a URL the caller
gave. A saved package (``remote_grpc.json``) may only set ``timeout`` and ``raw``; the env token goes
to its host only when ``host:port`` is listed in ``AIMASS_CLIENT_TOKEN_HOSTS`` or the caller passes
``options={"auth_token": ...}``.

Example:
    >>> from aimass import Model
    >>> m = Model.load("grpc://127.0.0.1:8001/fraud", options={"timeout": 2})   # doctest: +SKIP
    >>> m.predict(rows)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.backends.remote import CLIENT_TOKEN_ENV, CLIENT_TOKEN_HOSTS_ENV, package_token, refusal_text, remote_failure
from aimass.dependencies import require
from aimass.errors import (
    GRPC_CODES,
    AimassError,
    IntegrityError,
    ModelLoadError,
    ModelNotFound,
    SchemaError,
    UnsupportedOperation,
)
from aimass.files import read_json
from aimass.protocol import documents
from aimass.schema import Schema

__all__ = ["GrpcRemoteBackend"]

_URL = re.compile(
    r"^(?P<scheme>grpcs?)://(?P<target>[^/?#@]+)/(?:v2/models/)?(?P<name>[^/?#]+)"
    r"(?:/versions/(?P<version>[^/?#]+))?/?$"
)
_SCHEMES = ("grpc://", "grpcs://")
_DEFAULT_PORTS = {"grpc": 8001, "grpcs": 443}
_ARTIFACT = "remote_grpc.json"
_PACKAGE_OPTIONS = ("timeout", "raw")  # nothing that carries credentials or picks other hosts
_TENSOR_IN_MESSAGE = re.compile(r"^(?:input|output) '([^']+)'")
# gRPC code name -> the HTTP status a RemoteError carries: the server's table read backwards, the
# first (most common) status winning where several share a code (INVALID_ARGUMENT -> 400, not 422).
_HTTP_STATUS: dict[str, int] = {}
for _status, _code in GRPC_CODES.items():
    _HTTP_STATUS.setdefault(_code, _status)
_HTTP_STATUS["UNAVAILABLE"] = 503  # what a client sees of an unreachable or busy server: retry later
_log = logging.getLogger("aimass")


def _grpc() -> Any:
    return require("grpc", feature="gRPC remote models", extra="grpc", package="grpcio")


def _stubs() -> tuple[Any, Any, Any]:
    _grpc()
    from aimass.protocol.grpc import codec, grpc_service_pb2, grpc_service_pb2_grpc

    return codec, grpc_service_pb2, grpc_service_pb2_grpc


def _target(match: re.Match[str]) -> tuple[str, int]:
    host, _, port = match["target"].rpartition(":")
    if not host or not port.isdigit():
        return match["target"], _DEFAULT_PORTS[match["scheme"]]
    return host, int(port)


def _typed_error(error: Any, url: str, target: str) -> AimassError:
    """A gRPC failure as the aimass exception the HTTP remote raises for the matching status.

    NOT_FOUND and INVALID_ARGUMENT are V2 refusals that name the model or tensor: their message is
    passed on, redacted and capped; any other answer's text stays out of the message
    (:func:`~aimass.backends.remote.remote_failure`).
    """
    code = error.code().name if error.code() is not None else "UNKNOWN"
    details = error.details() or ""
    if code in ("NOT_FOUND", "INVALID_ARGUMENT"):
        message = refusal_text(details) or code
        if code == "NOT_FOUND":
            return ModelNotFound(message)
        found = _TENSOR_IN_MESSAGE.match(message)
        return SchemaError(message, tensor=found.group(1) if found else None)
    return remote_failure(url, target, f"gRPC {code}", _HTTP_STATUS.get(code, 502), details)


def _token_host_allowed(host: str, port: int, scheme: str, env: Mapping[str, str]) -> bool:
    for entry in env.get(CLIENT_TOKEN_HOSTS_ENV, "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        listed_host, _, listed_port = entry.rpartition(":")
        if not listed_host or not listed_port.isdigit():  # no port: the scheme's default, as for HTTP
            listed_host, listed_port = entry, str(_DEFAULT_PORTS[scheme])
        if (listed_host, int(listed_port)) == (host, port):
            return True
    return False


def _package_source(path: Path, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL and options of a saved gRPC remote package, refusing one that tries to carry credentials."""
    where = str(path)
    saved = read_json(path, IntegrityError, where=f"remote package file {where}")
    if not isinstance(saved, dict) or not isinstance(saved.get("url"), str) or set(saved) - {"url", "options"}:
        raise IntegrityError(f"remote package file {where}: expected an object with a string 'url' and 'options'")
    saved_options = saved.get("options") or {}
    if not isinstance(saved_options, dict) or set(saved_options) - set(_PACKAGE_OPTIONS):
        raise IntegrityError(
            f"remote package file {where}: only the options {', '.join(_PACKAGE_OPTIONS)} are allowed in a package "
            "(credentials, headers and certificates come from the caller)"
        )
    timeout = saved_options.get("timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise IntegrityError(f"remote package file {where}: option 'timeout' must be a non-negative number")
    if not isinstance(saved_options.get("raw", True), bool):
        raise IntegrityError(f"remote package file {where}: option 'raw' must be true or false")
    url: str = saved["url"]
    match = _URL.match(url)
    if match is None:
        raise IntegrityError(f"remote package file {where}: {url!r} is not a gRPC model URL")
    merged = {**saved_options, **options}
    host, port = _target(match)
    token, sending = package_token(options, lambda: _token_host_allowed(host, port, match["scheme"], os.environ))
    merged.update(token)
    _log.warning("package %s points at remote server %s; %s", path.parent, url, sending)
    return url, merged


class GrpcRemoteBackend(Backend):
    """A model behind a V2 gRPC endpoint."""

    name: ClassVar[str] = "grpc"
    framework: ClassVar[str] = "grpcio"
    extra: ClassVar[str] = "grpc"

    def __init__(self, url: str, options: Mapping[str, Any], schema: Schema | None) -> None:
        match = _URL.match(url)
        if match is None:
            raise ModelLoadError(f"not a gRPC model URL: {url!r} (expected grpc[s]://host[:port]/NAME[/versions/V])")
        grpc = _grpc()
        self._codec, self._pb, self._pb_grpc = _stubs()
        self.url = url.rstrip("/")
        self.model_name = match["name"]
        self.model_version = match["version"]
        host, port = _target(match)
        self.target = f"{host}:{port}"
        self._options = dict(options)
        self._timeout = float(options.get("timeout", 30.0))
        self._raw = bool(options.get("raw", True))
        size = int(options.get("max_message_size", 64 * 1024 * 1024))
        self._channel_options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]
        self._credentials = None
        if match["scheme"] == "grpcs":
            self._credentials = grpc.ssl_channel_credentials(root_certificates=options.get("root_certificates"))
        metadata = [(str(k).lower(), str(v)) for k, v in (options.get("headers") or {}).items()]
        token = options.get("auth_token", os.environ.get(CLIENT_TOKEN_ENV))
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        self._metadata = tuple(metadata)
        self._sync_channel = self._channel(grpc)
        self._stub = self._pb_grpc.GRPCInferenceServiceStub(self._sync_channel)
        self._astubs: dict[int, tuple[Any, Any]] = {}
        request = self._pb.ModelMetadataRequest(name=self.model_name, version=self.model_version or "")
        self.metadata: dict[str, Any] = self._codec.metadata_document(self._call(self._stub.ModelMetadata, request))
        self.schema = schema or documents.schema_from_metadata(self.metadata, self.url)
        self._output_names = self.schema.output_names

    def _channel(self, grpc: Any) -> Any:
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, options=self._channel_options)
        return grpc.insecure_channel(self.target, options=self._channel_options)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def accepts(cls, source: Any) -> bool:
        if isinstance(source, str):
            return source.startswith(_SCHEMES)
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
    ) -> GrpcRemoteBackend:
        if isinstance(source, Path) or (isinstance(source, str) and not source.startswith(_SCHEMES)):
            source, options = _package_source(Path(source), options or {})
        backend = cls(str(source), options or {}, schema)
        if device != "cpu":
            backend.device = device  # the server owns the hardware; the client side has nothing to move
        return backend

    # -- calls ----------------------------------------------------------------------------------

    def _call(self, method: Any, request: Any) -> Any:
        grpc = _grpc()
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _typed_error(e, self.url, self.target) from None

    def _astub(self) -> Any:
        # A grpc.aio channel belongs to the event loop it was made on.
        key = id(asyncio.get_running_loop())
        found = self._astubs.get(key)
        if found is None:
            grpc = _grpc()
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._channel_options)
            else:
                channel = grpc.aio.insecure_channel(self.target, options=self._channel_options)
            found = (channel, self._pb_grpc.GRPCInferenceServiceStub(channel))
            self._astubs = {key: found}
        return found[1]

    def _request(self, inputs: dict[str, np.ndarray]) -> Any:
        return self._codec.encode_infer_request(
            inputs, model_name=self.model_name, model_version=self.model_version, raw=self._raw
        )

    def _outputs(self, response: Any) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = self._codec.decode_infer_response(response).outputs
        if set(outputs) >= set(self._output_names):
            return {name: outputs[name] for name in self._output_names} | outputs  # schema order
        return outputs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._outputs(self._call(self._stub.ModelInfer, self._request(inputs)))

    async def arun(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` on a ``grpc.aio`` channel: no thread per request."""
        grpc = _grpc()
        try:
            response = await self._astub().ModelInfer(
                self._request(inputs), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise _typed_error(e, self.url, self.target) from None
        return self._outputs(response)

    def save(self, directory: Path) -> list[str]:
        # A remote package points at the service; tokens, headers and certificates are not written to disk.
        keep = {k: v for k, v in self._options.items() if k in _PACKAGE_OPTIONS}
        (directory / _ARTIFACT).write_text(json.dumps({"url": self.url, "options": keep}, indent=2), encoding="utf-8")
        return [_ARTIFACT]

    def to(self, device: str) -> GrpcRemoteBackend:
        if device == self.device:
            return self
        raise UnsupportedOperation(
            f"a remote model runs where its server put it; choose the device on the server, not with to({device!r})"
        )

    def close(self) -> None:
        """Close the channel of ``predict`` (``apredict``'s close with their event loops)."""
        self._sync_channel.close()
