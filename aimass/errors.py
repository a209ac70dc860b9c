"""One exception tree for aimass.

Every error raised on purpose by aimass derives from :class:`AimassError`. Each class carries the
HTTP status a server answers with, so the mapping from exception to response lives in one place
(``status_code``) rather than in every endpoint; :data:`GRPC_CODES` gives the gRPC status code
beside each HTTP status (``exc.grpc_code``), for the same errors answered over gRPC.

Example:
    >>> from aimass.errors import SchemaError
    >>> try:
    ...     raise SchemaError("input 'x': expected FP32 shape [-1, 4], got float64 shape [3, 5]", tensor="x")
    ... except SchemaError as e:
    ...     e.tensor, e.status_code
    ('x', 400)
    >>> SchemaError("bad").grpc_code
    'INVALID_ARGUMENT'
"""

from __future__ import annotations

__all__ = [
    "AddressInUse",
    "AimassError",
    "BackendNotFound",
    "BackendUnavailable",
    "CompressionRejected",
    "ConversionError",
    "DeviceError",
    "GRPC_CODES",
    "GateFailed",
    "IntegrityError",
    "MissingDependency",
    "ModelLoadError",
    "ModelNotFound",
    "PlacementError",
    "PredictionError",
    "RemoteError",
    "SchemaError",
    "ServiceUnavailable",
    "StoreError",
    "UnsafeProgram",
    "UnsupportedOperation",
    "UntrustedCode",
]


#: The gRPC status code (a ``grpc.StatusCode`` member name) answered for each HTTP status, so both
#: transports refuse the same request the same way (Triton's choices where it has one).
GRPC_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT",  # SchemaError, ModelLoadError, BackendNotFound, DeviceError, StoreError ...
    401: "UNAUTHENTICATED",  # missing or wrong bearer token
    403: "PERMISSION_DENIED",  # UntrustedCode: a package with code, loaded without trust_code
    404: "NOT_FOUND",  # ModelNotFound
    405: "UNIMPLEMENTED",
    409: "FAILED_PRECONDITION",  # GateFailed
    413: "RESOURCE_EXHAUSTED",  # a request over the size limit
    422: "INVALID_ARGUMENT",  # CompressionRejected
    499: "CANCELLED",  # the client went away
    500: "INTERNAL",  # PredictionError, ConversionError, MissingDependency
    502: "UNAVAILABLE",  # RemoteError: the upstream server failed
    503: "UNAVAILABLE",  # ServiceUnavailable: queue full (retry later)
    504: "DEADLINE_EXCEEDED",  # ServiceUnavailable: request_timeout passed
    507: "RESOURCE_EXHAUSTED",  # ServiceUnavailable: a model that does not fit the memory budget
}


class AimassError(Exception):
    """Base class of every error aimass raises on purpose."""

    status_code: int = 500

    @property
    def grpc_code(self) -> str:
        """The gRPC status code name matching ``status_code`` (:data:`GRPC_CODES`; other 4xx: INVALID_ARGUMENT)."""
        code = GRPC_CODES.get(self.status_code)
        if code is None:
            code = "INVALID_ARGUMENT" if 400 <= self.status_code < 500 else "INTERNAL"
        return code


class SchemaError(AimassError, ValueError):
    """An input or output does not match the model's schema (name, dtype or shape).

    ``tensor`` names the offending tensor when there is one.
    """

    status_code = 400

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class MissingDependency(AimassError, ImportError):
    """An optional dependency is not installed; the message names the feature and the extra to install."""

    status_code = 500

    def __init__(self, feature: str, package: str, extra: str, detail: str = "") -> None:
        msg = f"{feature} needs {package}: pip install 'aimass[{extra}]'"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.feature = feature
        self.package = package
        self.extra = extra


class BackendUnavailable(MissingDependency):
    """The framework a backend needs is not installed; the message names the extra to install."""

    def __init__(self, backend: str, package: str, extra: str, detail: str = "") -> None:
        super().__init__(f"the {backend} backend", package, extra, detail)
        self.backend = backend


class BackendNotFound(AimassError, LookupError):
    """No backend is registered under a name, or none recognises the given object or path."""

    status_code = 400


class ModelLoadError(AimassError):
    """A model could not be loaded (bad file, unsupported object, pickle refused ...)."""

    status_code = 400


class IntegrityError(ModelLoadError):
    """A saved package is tampered with, truncated or half-written (checksum or manifest failure)."""


class UntrustedCode(ModelLoadError):
    """A package holds Python code, which runs when it is loaded, and the caller did not opt in.

    ``files`` lists the package's code files. Opt in with ``Model.load(path, trust_code=True)``,
    ``--trust-code`` on any ``aimass`` command that loads a model, or the backend option ``trust_code=true``.

    Example:
        >>> try:                                                   # doctest: +SKIP
        ...     Model.load("shout-pkg/")
        ... except UntrustedCode as e:
        ...     e.files, e.status_code
        (['code/shout.py'], 403)
    """

    status_code = 403

    def __init__(self, message: str, *, files: list[str] | None = None) -> None:
        super().__init__(message)
        self.files = list(files or [])


class UnsafeProgram(UntrustedCode):
    """A model file that is a program names an operator outside its format's allow-list.

    Raised before any framework reads the file. ``file`` names the file, ``operators`` the
    operators that are not on the allow-list (file, network, process, custom or unknown ones).
    Opt in as for :class:`UntrustedCode` when the file comes from someone you trust.

    Example:
        >>> e = UnsafeProgram("model.pt2", "torch.export archive", ["aten::from_file"])
        >>> e.operators, e.status_code
        (['aten::from_file'], 403)
    """

    def __init__(self, file: str, kind: str, operators: list[str], *, detail: str = "") -> None:
        shown = ", ".join(operators[:8]) + (f" and {len(operators) - 8} more" if len(operators) > 8 else "")
        super().__init__(
            f"{file}: this {kind} is a program and names operators outside its allow-list: {shown}"
            f"{f' ({detail})' if detail else ''}; it was not loaded. If you trust its author, load it with "
            "Model.load(..., trust_code=True) or --trust-code on the aimass command",
            files=[file],
        )
        self.file = file
        self.operators = list(operators)


class ModelNotFound(AimassError, LookupError):
    """A model name or version that does not exist (server and model library)."""

    status_code = 404


class PlacementError(AimassError):
    """A cluster cannot place what was asked (replicas, actors): raised at once instead of waiting forever.

    Example:
        >>> PlacementError("4 replicas x 1 CPU = 4 CPUs asked; the Ray cluster has 2 of 2 CPUs free").status_code
        503
    """

    status_code = 503


class DeviceError(AimassError):
    """The requested device does not exist or the backend cannot use it."""

    status_code = 400


class PredictionError(AimassError):
    """The backend failed while running a valid input."""

    status_code = 500


class RemoteError(AimassError):
    """A remote model server answered with an error or could not be reached.

    The message says the status and the host, never what the server answered: that text is the
    remote's, may hold anything (a proxy's error page, a secret), and a model server would relay the
    message to its own clients. ``detail`` keeps the start of the answer, redacted, for the caller.

    Example:
        >>> e = RemoteError("remote server h:80 answered HTTP 403", status_code=403, detail="Forbidden")
        >>> e.status_code, e.detail
        (403, 'Forbidden')
    """

    def __init__(self, message: str, *, status_code: int = 502, detail: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class AddressInUse(AimassError, OSError):
    """A server cannot listen where it was asked: the port is taken, or the address is not this machine's.

    Raised before the server says it is serving (a failure: exit code 1 from ``aimass serve``).

    Example:
        >>> AddressInUse("cannot listen on 127.0.0.1:8000 (HTTP): address already in use").status_code
        500
    """


class ServiceUnavailable(AimassError):
    """The server refuses for now: a model's queue is full (503) or a request ran past its timeout (504).

    ``retry_after`` (seconds) is sent as the ``Retry-After`` header when set.
    """

    def __init__(self, message: str, *, status_code: int = 503, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class UnsupportedOperation(AimassError):
    """The operation exists in aimass but not for this backend or model."""

    status_code = 400


class StoreError(AimassError, ValueError):
    """A model-library request is invalid: a bad model name, alias or reference, or a malformed library."""

    status_code = 400


class GateFailed(StoreError):
    """A version's recorded metrics fail a gate (``{"accuracy": ">=0.9"}``), so an alias was not moved.

    ``failures`` lists one line per failing condition.
    """

    status_code = 409

    def __init__(self, message: str, *, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])


class CompressionRejected(AimassError):
    """A compressed model fell short of the caller's tolerance (``max_drop=``); ``report`` says by how much."""

    status_code = 422

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ConversionError(AimassError):
    """A converted model could not be produced, or its outputs differ from the source beyond tolerance.

    ``report`` holds the measured error when the conversion got as far as comparing outputs.
    """

    status_code = 500

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report
