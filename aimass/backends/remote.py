"""A model on a V2 inference server (aimass, Triton, MLServer, KServe) as one more backend.

``Model.load("http://host:8000/v2/models/NAME[/versions/V]")`` or
``Model.load("grpc://host:8001/NAME")`` gives a :class:`RemoteBackend`: it reads the schema from
the server's model metadata; ``predict`` then validates locally (same messages as a local model)
and sends the request through its wire client, which speaks the protocol with the codec the aimass
server decodes with: :class:`~aimass.backends.remote_http.HttpWire` (inputs above
``binary_threshold`` bytes go as binary tensors when the server announces the
``binary_tensor_data`` extension; Triton and aimass do, MLServer does not; ``endpoints`` spreads
requests over more servers, see :mod:`aimass.backends.balancer`) or
:class:`~aimass.backends.remote_grpc.GrpcWire`. The backend does what does not depend on the wire:
the schema, outputs in schema order, saved packages, and the device, which is the server's
(``owns_device``: ``to("cuda")`` never looks for a local GPU).

Credentials go only where the user sends them. The client token is the ``auth_token`` option
(per-model config: ``AIMASS_<NAME>_AUTH_TOKEN`` or ``auth_token`` in aimass.toml), else the env
var ``AIMASS_CLIENT_TOKEN`` for a URL the caller gave (``Model.load(url)``, config). The server's
own token (``AIMASS_SERVER_TOKEN``, ``aimass serve``) is never read here. A saved remote package
(``remote.json``, ``remote_grpc.json``) names its URL but cannot carry credentials: its options
may only be the wire's harmless settings (``timeout``, ``connect_timeout``, ``retries`` and
``binary_threshold`` for HTTP; ``timeout`` and ``raw`` for gRPC; anything else, e.g. ``headers``,
``auth_token``, ``endpoints``, is refused with :class:`~aimass.errors.IntegrityError`); loading it
logs a warning naming the URL, and ``AIMASS_CLIENT_TOKEN`` is sent to it only when its
``host[:port]`` is listed in ``AIMASS_CLIENT_TOKEN_HOSTS`` (comma-separated; a host without a port
means the scheme's default port) or the caller opts in with ``options={"auth_token": ...}``
(:mod:`aimass.backends.remote_rules`, one set of rules for both wires).

Example:
    >>> from aimass import Model
    >>> remote = Model.load("http://127.0.0.1:8000/v2/models/fraud", options={"timeout": 2})   # doctest: +SKIP
    >>> remote.backend.owns_device           # the server chose its device, not Model.to   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from aimass.backends.base import Backend
from aimass.backends.remote_http import HttpWire, InProcessTransport, mount, raise_for_status, unmount
from aimass.backends.remote_rules import (
    CLIENT_TOKEN_ENV,
    CLIENT_TOKEN_HOSTS_ENV,
    PackageRules,
    in_schema_order,
    package_token,
    read_package,
    refusal_text,
    remote_failure,
)
from aimass.errors import UnsupportedOperation
from aimass.protocol import documents
from aimass.schema import Schema

__all__ = [
    "CLIENT_TOKEN_ENV",
    "CLIENT_TOKEN_HOSTS_ENV",
    "InProcessTransport",
    "RemoteBackend",
    "Wire",
    "mount",
    "package_token",
    "raise_for_status",
    "refusal_text",
    "remote_failure",
    "unmount",
]


class Wire(Protocol):
    """What the remote backend needs of a wire client: one model's metadata and inference.

    A wire class also says which URLs it takes (``schemes``) and the rules of its saved package
    (``rules``: the file, its options, its URLs, the token hosts).
    Errors are the aimass ones (:class:`~aimass.errors.SchemaError`, ``ModelNotFound``, ``RemoteError``).
    """

    schemes: ClassVar[tuple[str, ...]]
    rules: ClassVar[PackageRules]
    url: str
    model_name: str
    model_version: str | None

    def __init__(self, url: str, options: Mapping[str, Any]) -> None: ...

    def metadata(self) -> dict[str, Any]: ...

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    async def ainfer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class RemoteBackend(Backend):
    """A model behind a V2 endpoint, reached through ``client`` (HTTP here; gRPC for ``grpc``).

    Example:
        >>> backend = RemoteBackend(HttpWire("http://mass:8000/v2/models/fraud", {}))   # doctest: +SKIP
        >>> backend.schema.input_names                                                  # doctest: +SKIP
        ['x']
    """

    name: ClassVar[str] = "remote"
    framework: ClassVar[str] = "httpx"
    extra: ClassVar[str] = "server"
    owns_device: ClassVar[bool] = True
    wire: ClassVar[type[Wire]] = HttpWire

    def __init__(self, client: Wire, schema: Schema | None = None, options: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self._options = dict(options or {})  # what the model was loaded with: save keeps the package's part
        self.url = client.url
        self.model_name = client.model_name
        self.model_version = client.model_version
        self.metadata: dict[str, Any] = client.metadata()
        self.schema = schema or documents.schema_from_metadata(self.metadata, self.url)
        self._output_names = self.schema.output_names

    def __getattr__(self, name: str) -> Any:
        # The wire's own state (``binary_supported``, its timeouts and pools) reads through the backend.
        client = self.__dict__.get("client")
        if client is None:
            raise AttributeError(name)
        return getattr(client, name)

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def accepts(cls, source: Any) -> bool:
        if isinstance(source, str):
            return source.startswith(cls.wire.schemes)
        return isinstance(source, Path) and source.name == cls.wire.rules.artifact

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
        options = options or {}
        rules = cls.wire.rules
        if isinstance(source, Path) or (
            isinstance(source, str) and not source.startswith(cls.wire.schemes) and source.endswith(rules.artifact)
        ):
            source, options = read_package(Path(source), options, rules)
        backend = cls(cls.wire(str(source), options), schema, options)
        if device != "cpu":
            backend.device = device  # the server owns the hardware; the client side has nothing to move
        return backend

    # -- inference --------------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return in_schema_order(self.client.infer(inputs), self._output_names)

    async def arun(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` on the wire's async client: no thread per request."""
        return in_schema_order(await self.client.ainfer(inputs), self._output_names)

    # -- the rest of the contract ---------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        # A remote package points at the service; tokens, headers and transports are not written to disk.
        rules = self.wire.rules
        document = rules.saved(self.url, self._options)
        (directory / rules.artifact).write_text(json.dumps(document, indent=2), encoding="utf-8")
        return [rules.artifact]

    def to(self, device: str) -> RemoteBackend:
        if device == self.device:
            return self
        raise UnsupportedOperation(
            f"a remote model runs where its server put it; choose the device on the server, not with to({device!r})"
        )

    def close(self) -> None:
        """Close the wire's connections."""
        self.client.close()
