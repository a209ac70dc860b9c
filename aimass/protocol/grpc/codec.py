"""Protobuf messages of the V2 gRPC protocol <-> the structures the HTTP codec decodes to.

One codec, two ends, as for HTTP: the server decodes ``ModelInferRequest`` into the same
:class:`~aimass.protocol.v2.InferRequest` the JSON path produces and encodes outputs into a
``ModelInferResponse``; the remote backend does the reverse. Tensors go through
:func:`aimass.protocol.v2.decode_tensor` / :func:`~aimass.protocol.v2.encode_tensor`, so the checks
(a shape over ``max_elements`` refused before anything is allocated, raw bytes that do not fit the
shape, BYTES as 4-byte little-endian length-prefixed elements) and their messages are the HTTP ones.

Both encodings of the protocol are read: typed ``contents`` (``fp32_contents``, ``int_contents``,
...) and ``raw_input_contents`` / ``raw_output_contents`` (one entry per tensor, all or none).
Responses are written raw, as Triton does (every V2 gRPC client reads them); requests are written
raw unless ``raw=False``. FP16 and BF16 have no typed field: they always travel raw.

The other documents (server and model metadata, model config, repository index) are built from
the dicts of :mod:`aimass.protocol.documents`, and read back into the dicts its parsers take.

Example:
    >>> import numpy as np
    >>> msg = encode_infer_request({"x": np.ones((2, 4), np.float32)}, model_name="mlp")
    >>> decode_infer_request(msg).inputs["x"].shape
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from aimass.errors import SchemaError
from aimass.protocol import v2
from aimass.protocol.grpc import grpc_service_pb2 as pb
from aimass.schema import DType

__all__ = [
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "metadata_document",
    "model_config_response",
    "model_metadata_response",
    "parameters_dict",
    "repository_index_response",
    "server_metadata_document",
    "server_metadata_response",
]

# The typed field of InferTensorContents that carries each datatype (FP16/BF16 have none).
_CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# Fixed-size datatypes and their numpy dtypes (native byte order): the fast paths of raw tensors.
_FIXED: dict[str, np.dtype[Any]] = {d.value: np.dtype(d.numpy) for d in DType if d is not DType.BYTES}
_FIXED_NAMES: dict[np.dtype[Any], str] = {dt: name for name, dt in _FIXED.items()}

_UNBOUNDED = 1 << 62  # responses come from the server the caller chose: no element limit

# -- parameters ---------------------------------------------------------------------------------------


def parameters_dict(params: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict.

    Example:
        >>> msg = pb.ModelInferRequest()
        >>> msg.parameters["priority"].int64_param = 2
        >>> parameters_dict(msg.parameters)
        {'priority': 2}
    """
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def _set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        p = target[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = str(value)


# -- tensors ------------------------------------------------------------------------------------------


def _head(t: Any) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def _typed(t: Any, kind: str, max_elements: int) -> tuple[str, np.ndarray]:
    """A tensor sent in typed ``contents``, checked and converted by the HTTP codec's rules."""
    head = _head(t)
    field = _CONTENTS.get(t.datatype)
    if field is None:
        if t.datatype in ("FP16", "BF16"):
            raise SchemaError(
                f"{kind} {t.name!r}: {t.datatype} has no typed contents field: send it in raw_{kind}_contents",
                tensor=t.name,
            )
        return v2.decode_tensor({**head, "data": []}, kind=kind, max_elements=max_elements)  # names the datatype
    values = getattr(t.contents, field)
    if field == "bytes_contents":
        # The raw BYTES layout (4-byte little-endian length, then the bytes), decoded by the one decoder.
        chunk = b"".join(len(v).to_bytes(4, "little") + v for v in values)
        return v2.decode_tensor(head, memoryview(chunk), kind=kind, max_elements=max_elements)
    return v2.decode_tensor({**head, "data": list(values)}, kind=kind, max_elements=max_elements)


def _decode_tensors(
    tensors: Sequence[Any], raw: Sequence[bytes], kind: str, max_elements: int
) -> dict[str, np.ndarray]:
    if raw and len(raw) != len(tensors):
        raise SchemaError(
            f"raw_{kind}_contents has {len(raw)} entries for {len(tensors)} {kind}s: send every {kind} raw or none"
        )
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(tensors):
        if raw:
            if t.HasField("contents"):
                raise SchemaError(f"{kind} {t.name!r} has both typed contents and raw contents", tensor=t.name)
            chunk = raw[i]
            fast = _fixed_raw(t, chunk, max_elements)
            if fast is not None:
                name, arr = t.name, fast
            else:  # anything unusual (BYTES, a bad shape or size) takes the HTTP decoder and its messages
                name, arr = v2.decode_tensor(_head(t), memoryview(chunk), kind=kind, max_elements=max_elements)
        else:
            name, arr = _typed(t, kind, max_elements)
        if name in out:
            raise SchemaError(f"{kind} {name!r} appears twice", tensor=name)
        out[name] = arr
    return out


def _fixed_raw(t: Any, chunk: bytes, max_elements: int) -> np.ndarray | None:
    """A raw fixed-size tensor whose shape and byte count are right, viewed without a copy; else None.

    The common request (FP32 rows) skips the V2 head dict; whatever this does not accept goes to
    :func:`aimass.protocol.v2.decode_tensor`, which raises the errors, so they read the same.
    """
    dtype = _FIXED.get(t.datatype)
    if dtype is None:
        return None
    shape = tuple(t.shape)
    count = 1
    for d in shape:
        if d < 0:
            return None
        count *= d
    if count == 0 or count > max_elements or len(chunk) != count * dtype.itemsize:
        return None
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _put(tensor: Any, raw: list[bytes] | None, name: str, value: Any, kind: str) -> None:
    """Fill one tensor message: raw bytes appended to ``raw``, or typed contents when ``raw`` is None."""
    if raw is not None:
        obj, chunk = v2.encode_tensor(name, value, binary=True, kind=kind)
        raw.append(bytes(chunk))
    else:
        obj, _ = v2.encode_tensor(name, value, kind=kind)
        field = getattr(tensor.contents, _CONTENTS[obj["datatype"]])
        data = obj["data"]
        if obj["datatype"] == "BYTES":
            field.extend(v.encode("utf-8") for v in data)
        else:
            field.extend(np.asarray(data).tolist())
    tensor.name = name
    tensor.datatype = obj["datatype"]
    tensor.shape.extend(obj["shape"])


def _raw_needed(values: Mapping[str, Any]) -> bool:
    """Whether typed contents cannot carry these tensors (FP16/BF16, or BYTES that are not UTF-8)."""
    for value in values.values():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        dtype = DType.from_numpy(arr.dtype)
        if dtype.value not in _CONTENTS:
            return True
        if dtype is DType.BYTES and any(isinstance(v, bytes) and not _utf8(v) for v in arr.ravel()):
            return True
    return False


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- inference ----------------------------------------------------------------------------------------


def decode_infer_request(msg: Any, *, max_elements: int = v2.DEFAULT_MAX_ELEMENTS) -> v2.InferRequest:
    """A ``ModelInferRequest`` as the :class:`~aimass.protocol.v2.InferRequest` the HTTP path decodes to.

    Each input's element count is checked against ``max_elements`` from its shape before anything
    is allocated (SchemaError, i.e. INVALID_ARGUMENT).
    """
    inputs = _decode_tensors(msg.inputs, msg.raw_input_contents, "input", max_elements)
    outputs = [v2.RequestedOutput(o.name) for o in msg.outputs] if len(msg.outputs) else None
    return v2.InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=msg.id or None,
        parameters=parameters_dict(msg.parameters) if msg.parameters else {},
    )


def encode_infer_request(
    inputs: Mapping[str, Any],
    *,
    model_name: str,
    model_version: str | None = None,
    outputs: Sequence[str] | None = None,
    raw: bool = True,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """A ``ModelInferRequest``: inputs raw (default) or in typed contents (``raw=False``).

    Example:
        >>> msg = encode_infer_request({"x": np.ones((1, 2), np.float32)}, model_name="m", raw=False)
        >>> list(msg.inputs[0].contents.fp32_contents), len(msg.raw_input_contents)
        ([1.0, 1.0], 0)
    """
    msg = pb.ModelInferRequest(model_name=model_name, model_version=model_version or "", id=request_id or "")
    raw = raw or _raw_needed(inputs)
    chunks: list[bytes] | None = [] if raw else None
    for name, value in inputs.items():
        _put(msg.inputs.add(), chunks, name, value, "input")
    if chunks:
        msg.raw_input_contents.extend(chunks)
    for name in outputs or ():
        msg.outputs.add(name=name)
    if parameters:
        _set_parameters(msg.parameters, parameters)
    return msg


def encode_infer_response(
    outputs: Mapping[str, np.ndarray],
    *,
    model_name: str,
    model_version: str | None = None,
    request_id: str | None = None,
) -> Any:
    """A ``ModelInferResponse`` with every output in ``raw_output_contents`` (as Triton answers).

    Example:
        >>> msg = encode_infer_response({"y": np.zeros((1, 2), np.float32)}, model_name="m")
        >>> msg.outputs[0].datatype, list(msg.outputs[0].shape), len(msg.raw_output_contents[0])
        ('FP32', [1, 2], 8)
    """
    msg = pb.ModelInferResponse(model_name=model_name, model_version=model_version or "", id=request_id or "")
    add = msg.outputs.add
    chunks: list[bytes] = []
    for name, value in outputs.items():
        datatype = _FIXED_NAMES.get(value.dtype) if type(value) is np.ndarray else None
        if datatype is None:  # BYTES, other byte orders, lists: the general encoder
            _put(add(), chunks, name, value, "output")
            continue
        add(name=name, datatype=datatype, shape=value.shape)
        chunks.append(value.tobytes())  # the one copy, into the message (C order whatever the layout)
    msg.raw_output_contents.extend(chunks)
    return msg


def decode_infer_response(msg: Any) -> v2.InferResponse:
    """A ``ModelInferResponse`` (raw or typed outputs: Triton's, MLServer's or ours) as an InferResponse."""
    outputs = _decode_tensors(msg.outputs, msg.raw_output_contents, "output", _UNBOUNDED)
    return v2.InferResponse(
        outputs=outputs,
        model_name=msg.model_name,
        model_version=msg.model_version or None,
        id=msg.id or None,
        parameters=parameters_dict(msg.parameters),
    )


# -- other documents ------------------------------------------------------------------------------------


def server_metadata_response(doc: Mapping[str, Any]) -> Any:
    """``ServerMetadataResponse`` from :func:`aimass.protocol.documents.server_metadata`."""
    return json_format.ParseDict(doc, pb.ServerMetadataResponse())


def model_metadata_response(doc: Mapping[str, Any]) -> Any:
    """``ModelMetadataResponse`` from :func:`aimass.protocol.documents.model_metadata`."""
    return json_format.ParseDict(doc, pb.ModelMetadataResponse())


def model_config_response(doc: Mapping[str, Any]) -> Any:
    """``ModelConfigResponse`` from :func:`aimass.protocol.documents.model_config` (Triton's ModelConfig)."""
    response = pb.ModelConfigResponse()
    json_format.ParseDict(doc, response.config)
    return response


def repository_index_response(entries: Sequence[Mapping[str, Any]]) -> Any:
    """``RepositoryIndexResponse`` from the entries of :func:`aimass.protocol.documents.index_entry`."""
    return json_format.ParseDict({"models": list(entries)}, pb.RepositoryIndexResponse())


def server_metadata_document(msg: Any) -> dict[str, Any]:
    """A ``ServerMetadataResponse`` as the dict :func:`~aimass.protocol.documents.parse_server_metadata` takes."""
    return {"name": msg.name, "version": msg.version, "extensions": list(msg.extensions)}


def metadata_document(msg: Any) -> dict[str, Any]:
    """A ``ModelMetadataResponse`` as the dict :func:`~aimass.protocol.documents.schema_from_metadata` takes."""
    return {
        "name": msg.name,
        "versions": list(msg.versions),
        "platform": msg.platform,
        "inputs": [_head(t) for t in msg.inputs],
        "outputs": [_head(t) for t in msg.outputs],
    }
