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

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from aimass.errors import SchemaError
from aimass.protocol import v2
from aimass.protocol.grpc import grpc_service_pb2 as pb
from aimass.schema import DType, Schema, TensorSpec

__all__ = [
    "InferMessage",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "metadata_document",
    "model_config_response",
    "model_metadata_response",
    "parameters_dict",
    "read_infer_request",
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


def _typed(t: Any, kind: str, max_elements: int, spec: TensorSpec | None) -> tuple[str, np.ndarray]:
    """A tensor sent in typed ``contents`` of a parsed message, checked and converted by the HTTP codec's rules."""
    head = _head(t)
    field = _CONTENTS.get(t.datatype)
    if field is None:
        return _no_contents_field(head, kind, max_elements, spec)
    v2.tensor_head(head, kind, max_elements, spec)  # the head first: no values are read for a refused tensor
    values = getattr(t.contents, field)
    if field == "bytes_contents":
        # The raw BYTES layout (4-byte little-endian length, then the bytes), decoded by the one decoder.
        chunk = b"".join(len(v).to_bytes(4, "little") + v for v in values)
        return v2.decode_tensor(head, memoryview(chunk), kind=kind, max_elements=max_elements)
    return v2.decode_tensor({**head, "data": list(values)}, kind=kind, max_elements=max_elements)


def _no_contents_field(
    head: dict[str, Any], kind: str, max_elements: int, spec: TensorSpec | None
) -> tuple[str, np.ndarray]:
    name, datatype = head["name"], head["datatype"]
    if datatype in ("FP16", "BF16"):
        raise SchemaError(
            f"{kind} {name!r}: {datatype} has no typed contents field: send it in raw_{kind}_contents", tensor=name
        )
    return v2.decode_tensor({**head, "data": []}, kind=kind, max_elements=max_elements, spec=spec)  # names it


def _decode_tensors(
    tensors: Sequence[Any],
    raw: Sequence[bytes | memoryview],
    kind: str,
    max_elements: int,
    contents: Sequence[memoryview | None] | None = None,
    specs: Mapping[str, TensorSpec] | None = None,
) -> dict[str, np.ndarray]:
    """The tensors of a message; typed contents from ``contents`` (their wire bytes) when given, else parsed."""
    if raw and len(raw) != len(tensors):
        raise SchemaError(
            f"raw_{kind}_contents has {len(raw)} entries for {len(tensors)} {kind}s: send every {kind} raw or none"
        )
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(tensors):
        spec = specs.get(t.name) if specs else None
        typed = None if contents is None else contents[i]
        if raw:
            if t.HasField("contents") if contents is None else typed is not None:
                raise SchemaError(f"{kind} {t.name!r} has both typed contents and raw contents", tensor=t.name)
            chunk = raw[i]
            fast = _fixed_raw(t, chunk, max_elements, spec)
            if fast is not None:
                name, arr = t.name, fast
            else:  # anything unusual (BYTES, a bad shape or size) takes the HTTP decoder and its messages
                name, arr = v2.decode_tensor(
                    _head(t), memoryview(chunk), kind=kind, max_elements=max_elements, spec=spec
                )
        elif contents is not None:
            name, arr = _wire_typed(t, typed, kind, max_elements, spec)
        else:
            name, arr = _typed(t, kind, max_elements, spec)
        if name in out:
            raise SchemaError(f"{kind} {name!r} appears twice", tensor=name)
        out[name] = arr
    return out


def _fixed_raw(t: Any, chunk: bytes | memoryview, max_elements: int, spec: TensorSpec | None) -> np.ndarray | None:
    """A raw fixed-size tensor whose shape and byte count are right, viewed without a copy; else None.

    The common request (FP32 rows) skips the V2 head dict; whatever this does not accept goes to
    :func:`aimass.protocol.v2.decode_tensor`, which raises the errors, so they read the same.
    """
    dtype = _FIXED.get(t.datatype)
    if dtype is None or (spec is not None and spec.dtype.value != t.datatype):
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


# -- large requests, read from the wire -----------------------------------------------------------------
#
# upb parses a message in one C call that holds the GIL, and the typed values then come out one Python
# object at a time. Measured on a 2-core EPYC: 12 Mi one-byte varints of int_contents (12 MiB) took
# 0.43 s to parse (36 ns each; a 64 MiB message stops every thread, the event loop included, ~2 s),
# then 0.57 s for np.fromiter over the container, 0.49 s for np.array(container[:]), 1.3 s for
# np.array(list(container)); repeated fields do not offer the buffer protocol. So the server takes
# ModelInfer as bytes and, above v2.LEAN_BODY_SIZE, reads it here in a worker thread: the fields are
# walked in Python (a few per tensor, and the GIL is handed on between them), upb parses only the
# rest (names, shapes, parameters), raw contents stay views of the message (no copy), and typed
# contents are decoded from their packed bytes by numpy: FP32/FP64 viewed in place, varints in
# slices of _VARINT_SLICE bytes (12 Mi one-byte varints: 0.03 s; see _varint_slices).

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
_REQUEST_FIELDS = pb.ModelInferRequest.DESCRIPTOR.fields_by_name
_INPUTS, _RAW_INPUTS = _REQUEST_FIELDS["inputs"].number, _REQUEST_FIELDS["raw_input_contents"].number
_TENSOR_CONTENTS = pb.ModelInferRequest.InferInputTensor.DESCRIPTOR.fields_by_name["contents"].number
_CONTENT_NUMBERS = {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}
# Packed fixed-size contents: their little-endian layout is numpy's.
_PACKED_FIXED: dict[str, np.dtype[Any]] = {"fp32_contents": np.dtype("<f4"), "fp64_contents": np.dtype("<f8")}
# Varint contents: what protobuf keeps of a 64-bit varint (int32 and uint32 keep the low 32 bits).
_VARINT_TYPES: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
}
_VARINT_SLICE = 256 * 1024  # bytes decoded per numpy step: ~8 MiB of temporaries at worst


@dataclasses.dataclass(frozen=True, slots=True)
class InferMessage:
    """A ``ModelInferRequest`` read by :func:`read_infer_request`: ``head`` is the message without its
    tensor data when ``contents`` is not None (then ``raw`` and ``contents`` are views of the wire bytes,
    one ``contents`` entry per input, None where it has no typed contents), else the whole parsed message.
    """

    head: Any
    raw: Sequence[bytes | memoryview]
    contents: Sequence[memoryview | None] | None = None


def _malformed(what: str) -> SchemaError:
    return SchemaError(f"malformed ModelInferRequest: {what}")


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _malformed(f"a varint longer than 10 bytes at byte {pos}")
    raise _malformed(f"a varint cut off at byte {pos}")


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """The fields of the message in ``buf[pos:end]``: (number, wire type, field start, value start, value end)."""
    while pos < end:
        first = pos
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            stop = _read_varint(buf, pos, end)[1]
        elif wire == _WIRE_LEN:
            size, pos = _read_varint(buf, pos, end)
            stop = pos + size
        elif wire in (_WIRE_I64, _WIRE_I32):
            stop = pos + (8 if wire == _WIRE_I64 else 4)
        else:
            raise _malformed(f"wire type {wire} (a group) at byte {first}")
        if number == 0 or stop > end:
            raise _malformed(f"field {number} at byte {first} runs past its message")
        yield number, wire, first, pos, stop
        pos = stop


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _joined(views: list[memoryview]) -> memoryview:
    return views[0] if len(views) == 1 else memoryview(b"".join(views))  # one occurrence: no copy


def read_infer_request(wire: bytes | memoryview) -> InferMessage:
    """A ``ModelInferRequest`` from its bytes: parsed whole up to ``v2.LEAN_BODY_SIZE``, above it with its
    tensor data left in place (see the notes above ``_VARINT_SLICE``); SchemaError when malformed.

    Example:
        >>> msg = encode_infer_request({"x": np.ones((2, 4), np.float32)}, model_name="mlp")
        >>> read_infer_request(msg.SerializeToString()).head.model_name
        'mlp'
    """
    if len(wire) <= v2.LEAN_BODY_SIZE:
        msg = _parse(pb.ModelInferRequest, wire)
        return InferMessage(msg, msg.raw_input_contents)
    buf = memoryview(wire)
    head: list[bytes | memoryview] = []
    raw: list[memoryview] = []
    contents: list[memoryview | None] = []
    tag = _varint_bytes(_INPUTS << 3 | _WIRE_LEN)
    for number, wire_type, first, start, stop in _fields(buf, 0, len(buf)):
        if wire_type != _WIRE_LEN or number not in (_INPUTS, _RAW_INPUTS):
            head.append(buf[first:stop])  # upb reads these (and refuses what is wrong in them)
        elif number == _RAW_INPUTS:
            raw.append(buf[start:stop])
        else:
            rest: list[bytes | memoryview] = []
            typed: list[memoryview] = []
            for inner, inner_type, f, s, e in _fields(buf, start, stop):
                if inner == _TENSOR_CONTENTS and inner_type == _WIRE_LEN:
                    typed.append(buf[s:e])  # occurrences of a message field merge: their bytes concatenate
                else:
                    rest.append(buf[f:e])
            tensor = b"".join(rest)
            head += [tag, _varint_bytes(len(tensor)), tensor]
            contents.append(_joined(typed) if typed else None)
    return InferMessage(_parse(pb.ModelInferRequest, b"".join(head)), raw, contents)


def _parse(message: Any, wire: bytes | memoryview) -> Any:
    try:
        return message.FromString(wire)
    except DecodeError as e:
        raise _malformed(str(e)) from None


def _wire_typed(
    t: Any, contents: memoryview | None, kind: str, max_elements: int, spec: TensorSpec | None
) -> tuple[str, np.ndarray]:
    """A tensor's typed contents decoded from their wire bytes (``contents``), checked like JSON data."""
    head = _head(t)
    field = _CONTENTS.get(t.datatype)
    if field is None:
        return _no_contents_field(head, kind, max_elements, spec)
    name, where, dtype, shape, count = v2.tensor_head(head, kind, max_elements, spec)
    buf = contents if contents is not None else memoryview(b"")
    number = _CONTENT_NUMBERS[field]
    if field == "bytes_contents":
        return name, _wire_bytes(buf, number, count, where, name, shape).reshape(shape)
    packed: list[memoryview] = []
    for n, wire_type, _, start, stop in _fields(buf, 0, len(buf)):
        if n != number:
            continue  # other typed fields are ignored, as when parsed
        if wire_type != _WIRE_LEN:  # unpacked values (legal, rare; proto3 writers pack): let upb read them
            return _typed(_with_contents(t, buf), kind, max_elements, spec)
        packed.append(buf[start:stop])
    payload = _joined(packed) if packed else memoryview(b"")
    fixed = _PACKED_FIXED.get(field)
    if fixed is not None:
        found = len(payload) // fixed.itemsize
        if found != count or len(payload) % fixed.itemsize:
            raise SchemaError(f"{where}: shape {shape} needs {count} values, 'data' has {found}", tensor=name)
        return name, np.frombuffer(payload, dtype=fixed).astype(dtype.numpy, copy=False).reshape(shape)
    return name, _wire_varints(payload, _VARINT_TYPES[field], dtype, count, where, name, shape).reshape(shape)


def _with_contents(t: Any, contents: memoryview) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor()
    tensor.CopyFrom(t)
    tensor.contents.CopyFrom(_parse(pb.InferTensorContents, contents))
    return tensor


def _wire_varints(
    payload: memoryview, stored: np.dtype[Any], dtype: DType, count: int, where: str, name: str, shape: list[int]
) -> np.ndarray:
    data = np.frombuffer(payload, np.uint8)
    # Each value ends at a byte below 0x80: count them (in slices) before allocating the tensor.
    found = sum(int(np.count_nonzero(data[i : i + _VARINT_SLICE] < 0x80)) for i in range(0, len(data), _VARINT_SLICE))
    if found != count:
        raise SchemaError(f"{where}: shape {shape} needs {count} values, 'data' has {found}", tensor=name)
    if len(data) and data[-1] >= 0x80:
        raise SchemaError(f"{where}: the last typed value is cut off", tensor=name)
    want = dtype.numpy
    out = np.empty(count, dtype=want)
    narrow = want != stored and want.kind in "iu"  # INT8/INT16 in int_contents, UINT8/UINT16 in uint_contents
    lo = hi = 0
    for filled, values in _varint_slices(data, where, name):
        if stored.kind == "b":
            part = values != 0
        elif values.dtype == np.uint8:  # one-byte varints: 0..127 in any integer type
            part = values
        elif stored.itemsize == 4:
            part = values.astype(np.uint32)  # protobuf keeps the low 32 bits of an int32/uint32 varint
            if stored.kind == "i":
                part = part.view(np.int32)
        else:
            part = values.view(stored)
        if narrow and part.size:
            lo, hi = min(lo, int(part.min())), max(hi, int(part.max()))
        out[filled : filled + len(part)] = part
    if narrow:
        info = np.iinfo(want)
        if lo < info.min or hi > info.max:
            raise SchemaError(f"{where}: values [{lo}, {hi}] do not fit {dtype.value}", tensor=name)
    return out


def _varint_slices(data: np.ndarray, where: str, name: str) -> Iterator[tuple[int, np.ndarray]]:
    """Packed varints decoded in slices: (index of the first value, the values as uint64, or uint8 when
    each took one byte)."""
    pos = filled = 0
    while pos < len(data):
        part = data[pos : pos + _VARINT_SLICE]
        last = part < 0x80
        if last.all():  # one byte each (small non-negative numbers, booleans): the bytes are the values
            yield filled, part
            pos, filled = pos + len(part), filled + len(part)
            continue
        ends = np.flatnonzero(last)
        if not len(ends):
            raise SchemaError(f"{where}: a typed value is longer than 10 bytes", tensor=name)
        stop = int(ends[-1]) + 1
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts + 1
        if int(lengths.max()) > 10:
            raise SchemaError(f"{where}: a typed value is longer than 10 bytes", tensor=name)
        shifts = (np.arange(stop) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
        groups = (part[:stop] & 0x7F).astype(np.uint64) << shifts
        yield filled, np.bitwise_or.reduceat(groups, starts)
        pos, filled = pos + stop, filled + len(ends)


def _wire_bytes(buf: memoryview, number: int, count: int, where: str, name: str, shape: list[int]) -> np.ndarray:
    """BYTES typed contents (one length-delimited field per element) from their wire bytes."""
    if count * 2 > len(buf):  # each element takes at least a tag and a length: refuse before allocating
        raise SchemaError(
            f"{where}: {count} BYTES elements need at least {count * 2} bytes, contents have {len(buf)}", tensor=name
        )
    tag = _varint_bytes(number << 3 | _WIRE_LEN)
    if count and len(buf) % count == 0 and (step := len(buf) // count) > len(tag):
        for size in range(step - len(tag) - 1, -1, -1):  # the length's own bytes: 1 up to 10
            prefix = tag + _varint_bytes(size)
            if len(prefix) + size == step:
                uniform = v2.split_uniform(buf, count, prefix)
                if uniform is not None:
                    return uniform
                break
    out = np.empty(count, dtype=object)
    i = 0
    for n, wire_type, _, start, stop in _fields(buf, 0, len(buf)):
        if n != number or wire_type != _WIRE_LEN:
            continue
        if i == count:
            raise SchemaError(f"{where}: shape {shape} needs {count} values, 'data' has more", tensor=name)
        out[i] = bytes(buf[start:stop])
        i += 1
    if i != count:
        raise SchemaError(f"{where}: shape {shape} needs {count} values, 'data' has {i}", tensor=name)
    return out


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


def decode_infer_request(
    msg: Any, *, max_elements: int = v2.DEFAULT_MAX_ELEMENTS, schema: Schema | None = None
) -> v2.InferRequest:
    """A ``ModelInferRequest`` (or an :class:`InferMessage`) as the :class:`~aimass.protocol.v2.InferRequest`
    the HTTP path decodes to.

    Each input's element count is checked against ``max_elements`` from its shape, and with the model's
    ``schema`` its declared datatype against the model's (:func:`aimass.protocol.v2.check_declared`),
    before anything is allocated (SchemaError, i.e. INVALID_ARGUMENT).
    """
    specs = None if schema is None else {spec.name: spec for spec in schema.inputs}
    if isinstance(msg, InferMessage):
        msg, raw, contents = msg.head, msg.raw, msg.contents
    else:
        raw, contents = msg.raw_input_contents, None
    inputs = _decode_tensors(msg.inputs, raw, "input", max_elements, contents, specs)
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
