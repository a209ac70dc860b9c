"""The V2 documents other than inference: server metadata, model metadata, model config, repository index.

The server builds them and the remote backend (or any client) parses them, with the same code, so
the two ends cannot drift apart; :mod:`aimass.protocol.v2` is the inference half of the codec.

Builders return plain dicts in wire order (the server serializes them as they are):

* :func:`server_metadata` -- ``GET /v2``: ``{"name", "version", "extensions"}``;
* :func:`model_metadata` -- ``GET /v2/models/{name}[/versions/{v}]``: name, versions, platform
  and the inputs/outputs of a :class:`~aimass.schema.Schema` (``-1`` marks a dynamic dimension);
* :func:`model_config` -- ``GET .../config``: a Triton-style model configuration (what tritonclient
  and perf_analyzer read), whose ``dims`` leave out the batch dimension when ``max_batch_size > 0``;
* :func:`index_entry` -- one entry of ``POST /v2/repository/index``.

Parsers take the decoded JSON of a peer's answer and return typed values; anything malformed
raises :class:`~aimass.errors.ModelLoadError` naming the URL and the field
(``inputs[1].datatype``). They accept what Triton, MLServer and KServe send: missing optional
fields default to empty, extra fields are ignored, and config ``dims`` may be protobuf-JSON strings.

Example:
    >>> from aimass.schema import Schema, TensorSpec
    >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])
    >>> doc = model_metadata("mlp", ["1"], s, platform="aimass_onnx")
    >>> doc["inputs"]
    [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}]
    >>> schema_from_metadata(doc) == s
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from aimass.errors import ModelLoadError, SchemaError
from aimass.schema import DType, Schema, TensorSpec

__all__ = [
    "BINARY_TENSOR_DATA",
    "EXTENSIONS",
    "MODEL_CONFIGURATION",
    "MODEL_REPOSITORY",
    "READY",
    "UNAVAILABLE",
    "IndexEntry",
    "ModelMetadata",
    "ServerMetadata",
    "TritonConfig",
    "config_tensor",
    "index_entry",
    "model_config",
    "model_metadata",
    "parse_index_request",
    "parse_model_config",
    "parse_model_metadata",
    "parse_repository_index",
    "parse_server_metadata",
    "schema_from_metadata",
    "server_metadata",
    "tensor_metadata",
]

BINARY_TENSOR_DATA = "binary_tensor_data"
MODEL_REPOSITORY = "model_repository"
MODEL_CONFIGURATION = "model_configuration"
#: The extensions the aimass server announces in ``GET /v2``.
EXTENSIONS: tuple[str, ...] = (BINARY_TENSOR_DATA, MODEL_REPOSITORY, MODEL_CONFIGURATION)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"

_CONFIG_BYTES = "TYPE_STRING"  # Triton's model-config name for BYTES


# -- build (server side) ----------------------------------------------------------------------------


def server_metadata(name: str, version: str, extensions: Sequence[str] = EXTENSIONS) -> dict[str, Any]:
    """The ``GET /v2`` document.

    Example:
        >>> server_metadata("aimass", "0.1.0", ["binary_tensor_data"])
        {'name': 'aimass', 'version': '0.1.0', 'extensions': ['binary_tensor_data']}
    """
    return {"name": name, "version": version, "extensions": list(extensions)}


def tensor_metadata(t: TensorSpec) -> dict[str, Any]:
    """One tensor of the model metadata: ``{"name", "datatype", "shape"}``."""
    return {"name": t.name, "datatype": t.dtype.value, "shape": t.shape}


def model_metadata(name: str, versions: Sequence[str], schema: Schema, *, platform: str) -> dict[str, Any]:
    """The V2 model metadata document (``GET /v2/models/{name}[/versions/{v}]``)."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [tensor_metadata(t) for t in schema.inputs],
        "outputs": [tensor_metadata(t) for t in schema.outputs],
    }


def config_tensor(t: TensorSpec, batched: bool) -> dict[str, Any]:
    """One tensor of a Triton model config; ``dims`` leave out the batch dimension when ``batched``."""
    data_type = _CONFIG_BYTES if t.dtype is DType.BYTES else f"TYPE_{t.dtype.value}"
    return {"name": t.name, "data_type": data_type, "dims": t.shape[1:] if batched else t.shape}


def model_config(
    name: str,
    schema: Schema,
    *,
    version: str,
    platform: str,
    backend: str,
    device: str = "cpu",
    max_batch_size: int = 0,
    max_queue_delay: float = 0.0,
) -> dict[str, Any]:
    """A Triton-style model configuration (``GET /v2/models/{name}[/versions/{v}]/config``).

    ``max_batch_size > 0`` means the first dimension of every tensor is the batch: it is left out of
    ``dims`` and ``dynamic_batching`` carries ``max_queue_delay`` (seconds) in microseconds.

    Example:
        >>> from aimass.schema import Schema, TensorSpec
        >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])
        >>> model_config("mlp", s, version="1", platform="aimass_onnx", backend="onnx", max_batch_size=8)["input"]
        [{'name': 'x', 'data_type': 'TYPE_FP32', 'dims': [4]}]
    """
    batched = max_batch_size > 0
    doc: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "backend": backend,
        "version_policy": {"specific": {"versions": [int(version)]}} if version.isdigit() else {},
        "max_batch_size": max_batch_size,
        "input": [config_tensor(t, batched) for t in schema.inputs],
        "output": [config_tensor(t, batched) for t in schema.outputs],
        "instance_group": [{"kind": "KIND_CPU" if device == "cpu" else "KIND_GPU", "count": 1}],
    }
    if batched:
        doc["dynamic_batching"] = {"max_queue_delay_microseconds": round(max_queue_delay * 1e6)}
    return doc


def index_entry(name: str, version: str, state: str = READY, reason: str | None = None) -> dict[str, Any]:
    """One entry of the repository index; ``reason`` says why a version is not READY.

    Example:
        >>> index_entry("mlp", "2", UNAVAILABLE, "unloaded")
        {'name': 'mlp', 'version': '2', 'state': 'UNAVAILABLE', 'reason': 'unloaded'}
    """
    entry: dict[str, Any] = {"name": name, "version": version, "state": state}
    if reason is not None:
        entry["reason"] = reason
    return entry


def parse_index_request(doc: Any) -> bool:
    """The ``ready`` flag of a ``POST /v2/repository/index`` body (already decoded; anything odd: False)."""
    return bool(doc.get("ready", False)) if isinstance(doc, dict) else False


# -- parse (client side) ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ServerMetadata:
    """A server's ``GET /v2`` answer."""

    name: str = ""
    version: str = ""
    extensions: tuple[str, ...] = ()

    def supports(self, extension: str) -> bool:
        """Whether the server announces ``extension`` (e.g. :data:`BINARY_TENSOR_DATA`)."""
        return extension in self.extensions


@dataclasses.dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A model metadata document; ``schema.inputs`` may be empty (MLServer without model settings)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    schema: Schema


@dataclasses.dataclass(frozen=True, slots=True)
class TritonConfig:
    """The parts of a Triton model config a client uses; ``schema`` has the batch dimension put back.

    Not :class:`aimass.config.ModelConfig` (where a model is found, from ``aimass.toml``): a document a server sends.
    """

    name: str
    max_batch_size: int
    schema: Schema


@dataclasses.dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model version in a repository index (``version`` is None where the server names none)."""

    name: str
    version: str | None
    state: str
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == READY


class _Where:
    """Error messages that name the URL, the document and the field."""

    def __init__(self, url: str | None, document: str) -> None:
        self.prefix = f"{url}: {document}" if url else document

    def error(self, field: str | None, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.prefix} field {field!r}: {problem}" if field else f"{self.prefix}: {problem}")


def _object(doc: Any, where: _Where, field: str | None = None) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise where.error(field, f"expected a JSON object, got {_kind(doc)}")
    return doc


def _kind(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, (str, int, float)) else type(value).__name__


def _string(doc: dict[str, Any], key: str, where: _Where, field: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise where.error(field, "missing" if key not in doc else f"expected a string, got {_kind(value)}")
    return value


def _list(doc: dict[str, Any], key: str, where: _Where, field: str) -> list[Any]:
    value = doc.get(key)
    if value is None:  # missing or null: empty (MLServer sends no tensors without model settings)
        return []
    if not isinstance(value, list):
        raise where.error(field, f"expected a list, got {_kind(value)}")
    return value


def _strings(doc: dict[str, Any], key: str, where: _Where) -> tuple[str, ...]:
    items = _list(doc, key, where, key)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise where.error(f"{key}[{i}]", f"expected a string, got {_kind(item)}")
    return tuple(items)


def _dims(value: Any, where: _Where, field: str, *, strings: bool) -> list[int]:
    if not isinstance(value, list):
        raise where.error(field, f"expected a list of integers, got {_kind(value)}")
    dims: list[int] = []
    for d in value:
        if strings and isinstance(d, str) and d.lstrip("-").isdigit():
            d = int(d)  # protobuf JSON writes int64 as strings
        if not isinstance(d, int) or isinstance(d, bool) or d < -1:
            raise where.error(field, f"expected integers >= 0 or -1 (dynamic), got {value!r}")
        dims.append(d)
    return dims


def _dtype(value: Any, where: _Where, field: str, *, config: bool) -> DType:
    if not isinstance(value, str):
        raise where.error(field, f"expected a tensor type name, got {_kind(value)}")
    if config and value == _CONFIG_BYTES:
        return DType.BYTES
    try:
        return DType.parse(value)
    except SchemaError:
        raise where.error(field, f"unknown tensor type {value!r}") from None


def _tensors(
    doc: dict[str, Any], key: str, where: _Where, *, type_key: str, shape_key: str, batch: bool = False
) -> list[TensorSpec]:
    config = type_key == "data_type"
    specs = []
    for i, item in enumerate(_list(doc, key, where, key)):
        field = f"{key}[{i}]"
        t = _object(item, where, field)
        name = _string(t, "name", where, f"{field}.name")
        dtype = _dtype(t.get(type_key), where, f"{field}.{type_key}", config=config)
        shape = _dims(t.get(shape_key), where, f"{field}.{shape_key}", strings=config)
        specs.append(TensorSpec(name=name, dtype=dtype, shape=[-1, *shape] if batch else shape))
    return specs


def _schema(inputs: list[TensorSpec], outputs: list[TensorSpec], where: _Where) -> Schema:
    try:
        return Schema(inputs=inputs, outputs=outputs)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise where.error(field or None, str(err["msg"]).removeprefix("Value error, ")) from None


def parse_server_metadata(doc: Any, url: str | None = None) -> ServerMetadata:
    """A ``GET /v2`` answer; ``extensions`` missing or null reads as none.

    Example:
        >>> info = parse_server_metadata({"name": "triton", "extensions": ["binary_tensor_data"]})
        >>> info.supports(BINARY_TENSOR_DATA)
        True
    """
    where = _Where(url, "server metadata")
    d = _object(doc, where)
    return ServerMetadata(
        name=_string(d, "name", where, "name", default=""),
        version=_string(d, "version", where, "version", default=""),
        extensions=_strings(d, "extensions", where),
    )


def parse_model_metadata(doc: Any, url: str | None = None) -> ModelMetadata:
    """A model metadata answer, its tensors as a Schema (inputs may be empty: see :func:`schema_from_metadata`)."""
    where = _Where(url, "model metadata")
    d = _object(doc, where)
    inputs = _tensors(d, "inputs", where, type_key="datatype", shape_key="shape")
    outputs = _tensors(d, "outputs", where, type_key="datatype", shape_key="shape")
    return ModelMetadata(
        name=_string(d, "name", where, "name", default=""),
        versions=_strings(d, "versions", where),
        platform=_string(d, "platform", where, "platform", default=""),
        schema=_schema(inputs, outputs, where),
    )


def schema_from_metadata(doc: Any, url: str | None = None) -> Schema:
    """The Schema of a model metadata answer; ModelLoadError when it is malformed or lists no inputs."""
    schema = parse_model_metadata(doc, url).schema
    if not schema.inputs:
        raise ModelLoadError(
            f"{url or 'model metadata'}: the server's metadata lists no inputs (MLServer needs them in "
            "model-settings.json); pass schema=Schema(...) to Model.load"
        )
    return schema


def parse_model_config(doc: Any, url: str | None = None) -> TritonConfig:
    """A Triton-style model config; with ``max_batch_size > 0`` each tensor's batch dimension comes back as -1."""
    where = _Where(url, "model config")
    d = _object(doc, where)
    mbs = d.get("max_batch_size", 0)
    if isinstance(mbs, str) and mbs.isdigit():
        mbs = int(mbs)
    if not isinstance(mbs, int) or isinstance(mbs, bool) or mbs < 0:
        raise where.error("max_batch_size", f"expected an integer >= 0, got {_kind(mbs)}")
    batch = mbs > 0
    inputs = _tensors(d, "input", where, type_key="data_type", shape_key="dims", batch=batch)
    outputs = _tensors(d, "output", where, type_key="data_type", shape_key="dims", batch=batch)
    return TritonConfig(
        name=_string(d, "name", where, "name", default=""), max_batch_size=mbs, schema=_schema(inputs, outputs, where)
    )


def parse_repository_index(doc: Any, url: str | None = None) -> list[IndexEntry]:
    """A repository index answer: one :class:`IndexEntry` per model version."""
    where = _Where(url, "repository index")
    if not isinstance(doc, list):
        raise where.error(None, f"expected a JSON list, got {_kind(doc)}")
    out = []
    for i, item in enumerate(doc):
        field = f"[{i}]"
        e = _object(item, where, field)
        version = e.get("version")
        if version is not None and not isinstance(version, str):
            raise where.error(f"{field}.version", f"expected a string, got {_kind(version)}")
        reason = e.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise where.error(f"{field}.reason", f"expected a string, got {_kind(reason)}")
        out.append(
            IndexEntry(
                name=_string(e, "name", where, f"{field}.name"),
                version=version or None,
                state=_string(e, "state", where, f"{field}.state", default=""),
                reason=reason,
            )
        )
    return out
