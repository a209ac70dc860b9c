"""The gRPC wire client of the remote backend, and ``grpc://`` models as the ``grpc`` backend.

``Model.load("grpc://host:8001/NAME[/versions/V]")`` (``grpcs://`` for TLS; the HTTP form's
``/v2/models/NAME`` path is accepted too) is a :class:`~aimass.backends.remote.RemoteBackend`
whose wire is :class:`GrpcWire`: it reads the schema from the server's ``ModelMetadata`` and sends
a ``ModelInfer`` encoded by :mod:`aimass.protocol.grpc.codec`, the codec the aimass server decodes
with. Everything else (schema, outputs in schema order, saved packages, tokens, devices) is the
remote backend's, as for HTTP. Server errors come back typed: INVALID_ARGUMENT ->
:class:`~aimass.errors.SchemaError` with the server's message and tensor name, NOT_FOUND ->
:class:`~aimass.errors.ModelNotFound`, anything else -> :class:`~aimass.errors.RemoteError`
carrying the matching HTTP status (UNAVAILABLE 503, DEADLINE_EXCEEDED 504, UNAUTHENTICATED 401,
...) and naming the host, never the server's details text (kept, redacted and cut, in
``RemoteError.detail`` and the log), as for HTTP.

One ``grpc`` channel (thread-safe) for ``predict`` and one ``grpc.aio`` channel per event loop for
``apredict``; a request is never sent twice. ``options``: ``timeout`` (seconds, default 30),
``raw`` (default True: tensors in ``raw_input_contents``; False: typed ``contents``),
``max_message_size`` (bytes, default 64 MiB), ``auth_token``, ``headers`` (more metadata) and
``root_certificates`` (PEM bytes, ``grpcs://`` only). A saved package (``remote_grpc.json``) may
only set ``timeout`` and ``raw`` (:mod:`aimass.backends.remote_rules`).

Example:
    >>> from aimass import Model
    >>> m = Model.load("grpc://127.0.0.1:8001/fraud", options={"timeout": 2})   # doctest: +SKIP
    >>> m.predict(rows)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from aimass.backends import remote_rules
from aimass.backends.remote import RemoteBackend, Wire
from aimass.backends.remote_rules import BOOLEAN, NON_NEGATIVE, ModelUrl, PackageRules
from aimass.dependencies import require
from aimass.errors import GRPC_CODES, AimassError, ModelNotFound

__all__ = ["GrpcRemoteBackend", "GrpcWire"]

_URL = ModelUrl(
    re.compile(
        r"^(?P<scheme>grpcs?)://(?P<target>[^/?#@]+)/(?:v2/models/)?(?P<name>[^/?#]+)"
        r"(?:/versions/(?P<version>[^/?#]+))?/?$"
    ),
    "gRPC model URL",
    "grpc[s]://host[:port]/NAME[/versions/V]",
)
_DEFAULT_PORTS = {"grpc": 8001, "grpcs": 443}
# gRPC code name -> the HTTP status a RemoteError carries: the server's table read backwards, the
# first (most common) status winning where several share a code (INVALID_ARGUMENT -> 400, not 422).
_HTTP_STATUS: dict[str, int] = {}
for _status, _code in GRPC_CODES.items():
    _HTTP_STATUS.setdefault(_code, _status)
_HTTP_STATUS["UNAVAILABLE"] = 503  # what a client sees of an unreachable or busy server: retry later


def _grpc() -> Any:
    return require("grpc", feature="gRPC remote models", extra="grpc", package="grpcio")


def _stubs() -> tuple[Any, Any, Any]:
    _grpc()
    # The codec shares the V2 tensor code (aimass.protocol.v2), which needs orjson.
    require("orjson", feature="gRPC remote models", extra="grpc")
    require("google.protobuf", feature="gRPC remote models", extra="grpc", package="protobuf")
    from aimass.protocol.grpc import codec, grpc_service_pb2, grpc_service_pb2_grpc

    return codec, grpc_service_pb2, grpc_service_pb2_grpc


def _address(target: str, scheme: str) -> tuple[str, int]:
    """``host[:port]`` as (host, port); no port: the scheme's default."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return target, _DEFAULT_PORTS[scheme]
    return host, int(port)


def _typed_error(error: Any, url: str, target: str) -> AimassError:
    """A gRPC failure as the aimass exception the HTTP wire raises for the matching status.

    NOT_FOUND and INVALID_ARGUMENT are V2 refusals that name the model or tensor: their message is
    passed on, redacted and capped; any other answer's text stays out of the message
    (:func:`~aimass.backends.remote_rules.remote_failure`).
    """
    code = error.code().name if error.code() is not None else "UNKNOWN"
    details = error.details() or ""
    if code in ("NOT_FOUND", "INVALID_ARGUMENT"):
        message = remote_rules.refusal_text(details) or code
        return ModelNotFound(message) if code == "NOT_FOUND" else remote_rules.schema_refusal(message)
    return remote_rules.remote_failure(url, target, f"gRPC {code}", _HTTP_STATUS.get(code, 502), details)


def _token_host_listed(url: str) -> bool:
    match = _URL.pattern.match(url)
    if match is None:
        return False
    scheme = match["scheme"]
    return remote_rules.token_host_listed(
        _address(match["target"], scheme), lambda entry: _address(entry, scheme), os.environ
    )


class GrpcWire:
    """V2 over gRPC for one model: its metadata and inference, sync and async."""

    schemes: ClassVar[tuple[str, ...]] = ("grpc://", "grpcs://")
    rules: ClassVar[PackageRules] = PackageRules(
        artifact="remote_grpc.json",
        options={"timeout": NON_NEGATIVE, "raw": BOOLEAN},
        from_caller="credentials, headers and certificates",
        url_problem=_URL.problem,  # the target cannot hold '@': a gRPC URL carries no credentials
        host_listed=_token_host_listed,
    )

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        match = _URL.parse(url)
        grpc = _grpc()
        self._codec, self._pb, self._pb_grpc = _stubs()
        self.url = url.rstrip("/")
        self.model_name: str = match["name"]
        self.model_version: str | None = match["version"]
        self.target = "{}:{}".format(*_address(match["target"], match["scheme"]))
        self._timeout = float(options.get("timeout", 30.0))
        self._raw = bool(options.get("raw", True))
        size = int(options.get("max_message_size", 64 * 1024 * 1024))
        self._channel_options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]
        self._credentials = None
        if match["scheme"] == "grpcs":
            self._credentials = grpc.ssl_channel_credentials(root_certificates=options.get("root_certificates"))
        metadata = [(str(k).lower(), str(v)) for k, v in (options.get("headers") or {}).items()]
        token = remote_rules.client_token(options)
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        self._metadata = tuple(metadata)
        self._sync_channel = self._channel(grpc)
        self._stub = self._pb_grpc.GRPCInferenceServiceStub(self._sync_channel)
        self._astubs: dict[int, tuple[Any, Any]] = {}

    def _channel(self, grpc: Any, aio: bool = False) -> Any:
        make = grpc.aio if aio else grpc
        if self._credentials is not None:
            return make.secure_channel(self.target, self._credentials, options=self._channel_options)
        return make.insecure_channel(self.target, options=self._channel_options)

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (``ModelMetadata``) as the V2 JSON document."""
        request = self._pb.ModelMetadataRequest(name=self.model_name, version=self.model_version or "")
        document: dict[str, Any] = self._codec.metadata_document(self._call(self._stub.ModelMetadata, request))
        return document

    # -- calls ------------------------------------------------------------------------------------

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
            channel = self._channel(_grpc(), aio=True)
            found = (channel, self._pb_grpc.GRPCInferenceServiceStub(channel))
            self._astubs = {key: found}
        return found[1]

    def _request(self, inputs: dict[str, np.ndarray]) -> Any:
        return self._codec.encode_infer_request(
            inputs, model_name=self.model_name, model_version=self.model_version, raw=self._raw
        )

    def _outputs(self, response: Any) -> dict[str, np.ndarray]:
        try:
            outputs: dict[str, np.ndarray] = self._codec.decode_infer_response(response).outputs
        except (AimassError, ValueError, TypeError) as e:
            # The server's answer is broken, not the caller's input: a 502 like any bad answer, its
            # text (which may quote what the remote sent) kept out of the message.
            raise remote_rules.remote_failure(
                self.url, self.target, f"a broken answer ({type(e).__name__})", 502, str(e)
            ) from None
        return outputs

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``ModelInfer``: the outputs in the order the server sent them."""
        return self._outputs(self._call(self._stub.ModelInfer, self._request(inputs)))

    async def ainfer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` on a ``grpc.aio`` channel: no thread per request."""
        grpc = _grpc()
        try:
            response = await self._astub().ModelInfer(
                self._request(inputs), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise _typed_error(e, self.url, self.target) from None
        return self._outputs(response)

    def close(self) -> None:
        """Close the channel of ``predict`` (``apredict``'s close with their event loops)."""
        self._sync_channel.close()


class GrpcRemoteBackend(RemoteBackend):
    """A model behind a V2 gRPC endpoint: the remote backend on the gRPC wire, registered as ``grpc``."""

    name: ClassVar[str] = "grpc"
    framework: ClassVar[str] = "grpcio"
    extra: ClassVar[str] = "grpc"
    wire: ClassVar[type[Wire]] = GrpcWire
