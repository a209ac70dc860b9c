"""The Open Inference Protocol (KServe V2 / Triton) codec, shared by the server and the remote backend.

One module, two ends: the client encodes requests and decodes responses, the server decodes
requests and encodes responses, with the same tensor code. Both JSON tensors (row-major ``data``,
``datatype``, ``shape``) and Triton's binary tensor data extension are supported: with binary
data the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors in order, each announced by ``parameters.binary_data_size``; BYTES elements are a 4-byte
little-endian length followed by the bytes. Binary tensors decode straight into numpy with
``np.frombuffer`` (no copy).

Everything malformed raises :class:`~aimass.errors.SchemaError` (HTTP 400) naming the tensor. A
tensor whose shape holds more than ``max_elements`` elements (default :data:`DEFAULT_MAX_ELEMENTS`)
is refused from its shape alone, before anything is allocated, so a few bytes of JSON cannot make
the server allocate gigabytes.

Example:
    >>> import numpy as np
    >>> body, headers = encode_request({"x": np.ones((2, 4), np.float32)}, binary=True)
    >>> req = decode_request(body, int(headers[HEADER_LENGTH]))
    >>> req.inputs["x"].shape, req.inputs["x"].dtype
    ((2, 4), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from aimass.errors import SchemaError
from aimass.schema import DType, Schema, TensorSpec

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_JSON_TREE",
    "LEAN_BODY_SIZE",
    "BodyTooLarge",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "TensorHead",
    "check_datatypes",
    "check_declared",
    "decode_request",
    "decode_response",
    "decode_tensor",
    "encode_request",
    "encode_response",
    "encode_tensor",
    "split_uniform",
    "tensor_head",
]

HEADER_LENGTH = "inference-header-content-length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# 64 Mi elements: 256 MiB of FP32, four times what the server's default 64 MiB body limit can carry.
DEFAULT_MAX_ELEMENTS = 1 << 26

_DTYPES: dict[str, DType] = {d.value: d for d in DType}
_V2_NAMES: dict[np.dtype[Any], str] = {d.numpy: d.value for d in DType if d is not DType.BYTES}
_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
_U32 = struct.Struct("<I")


@dataclasses.dataclass(slots=True)
class RequestedOutput:
    """An output named in a request; ``binary`` is None when the request leaves it to the default."""

    name: str
    binary: bool | None = None


@dataclasses.dataclass(slots=True)
class InferRequest:
    """A decoded inference request: inputs as numpy arrays plus what the client asked for."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    binary_output: bool = False

    def binary_outputs(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` the client wants as binary data."""
        if self.outputs is None:
            return set(names) if self.binary_output else set()
        return {o.name for o in self.outputs if (self.binary_output if o.binary is None else o.binary)}


@dataclasses.dataclass(slots=True)
class InferResponse:
    """A decoded inference response."""

    outputs: dict[str, np.ndarray]
    model_name: str = ""
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- tensors --------------------------------------------------------------------------------------


def _bytes_elements(arr: np.ndarray, where: str) -> list[bytes]:
    out = []
    for v in arr.ravel():
        if isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, str):
            out.append(v.encode("utf-8"))
        else:
            raise SchemaError(f"{where}: BYTES elements must be bytes or str, got {type(v).__name__}")
    return out


def encode_tensor(name: str, value: Any, *, binary: bool = False, kind: str = "input") -> tuple[dict[str, Any], Any]:
    """One tensor as its V2 JSON object, plus its binary chunk (None when sent as JSON ``data``).

    Example:
        >>> encode_tensor("x", np.zeros((1, 2), np.float32))[0]["datatype"]
        'FP32'
    """
    arr = value if type(value) is np.ndarray else np.asarray(value)
    dtype = DType.from_numpy(arr.dtype)
    obj: dict[str, Any] = {"name": name, "datatype": dtype.value, "shape": list(arr.shape)}
    where = f"{kind} {name!r}"
    if dtype is DType.BYTES:
        elements = _bytes_elements(arr, where)
        if binary:
            chunk: Any = b"".join(_U32.pack(len(e)) + e for e in elements)
            obj["parameters"] = {"binary_data_size": len(chunk)}
            return obj, chunk
        try:
            obj["data"] = [e.decode("utf-8") for e in elements]
        except UnicodeDecodeError:
            raise SchemaError(f"{where} holds bytes that are not UTF-8: send it as binary data") from None
        return obj, None
    arr = np.ascontiguousarray(arr)
    if binary:
        chunk = arr.data.cast("B") if arr.size else b""
        obj["parameters"] = {"binary_data_size": arr.nbytes}
        return obj, chunk
    obj["data"] = arr.reshape(-1)
    return obj, None


def _shape(t: Mapping[str, Any], where: str) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SchemaError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}", tensor=None)
    return shape


# Elements turned into Python bytes per numpy call: bounds the temporary list beside the tensor.
_SPLIT_ROWS = 1 << 16


def split_uniform(chunk: Any, count: int, prefix: bytes) -> np.ndarray | None:
    """``chunk`` as ``count`` elements of one length, each after the same ``prefix``; None if it is not so laid out.

    The common BYTES layout (fixed-width strings, tritonclient's encoding of numpy ``S`` arrays) is
    split by numpy: measured 0.7 s for 8 Mi 2-byte elements against 5.5 s for a Python loop. The
    caller supplies the prefix it expects (the 4-byte length of the first element, or a protobuf tag
    and length) and falls back to reading element by element when this returns None.

    Example:
        >>> split_uniform(b"\\x02\\x00\\x00\\x00ab\\x02\\x00\\x00\\x00cd", 2, b"\\x02\\x00\\x00\\x00")
        array([b'ab', b'cd'], dtype=object)
    """
    size = len(chunk)
    if count <= 0 or size % count:
        return None
    step = size // count
    width = step - len(prefix)
    if width < 0:
        return None
    rows = np.frombuffer(chunk, np.uint8).reshape(count, step)
    for j, byte in enumerate(prefix):  # one column at a time: a temporary of count booleans, not count * step
        if (rows[:, j] != byte).any():
            return None
    out = np.empty(count, dtype=object)
    if width == 0:
        out[:] = b""
        return out
    for i in range(0, count, _SPLIT_ROWS):
        out[i : i + _SPLIT_ROWS] = (
            np.ascontiguousarray(rows[i : i + _SPLIT_ROWS, len(prefix) :]).view(f"V{width}").ravel()
        )
    return out


def _decode_bytes(chunk: memoryview, count: int, where: str, name: str) -> np.ndarray:
    if count * 4 > len(chunk):  # each element takes at least its 4-byte length: refuse before allocating
        raise SchemaError(
            f"{where}: {count} BYTES elements need at least {count * 4} bytes, binary data has {len(chunk)}",
            tensor=name,
        )
    if count and (step := len(chunk) // count) >= 4 and len(chunk) % count == 0:
        uniform = split_uniform(chunk, count, _U32.pack(step - 4))
        if uniform is not None:
            return uniform
    out = np.empty(count, dtype=object)
    pos, end = 0, len(chunk)
    for i in range(count):
        if pos + 4 > end:
            raise SchemaError(f"{where}: binary BYTES data ends after {i} of {count} elements", tensor=name)
        (n,) = _U32.unpack_from(chunk, pos)
        pos += 4
        if pos + n > end:
            raise SchemaError(f"{where}: binary BYTES element {i} needs {n} bytes, {end - pos} left", tensor=name)
        out[i] = bytes(chunk[pos : pos + n])
        pos += n
    if pos != end:
        raise SchemaError(f"{where}: {end - pos} bytes left over after {count} BYTES elements", tensor=name)
    return out


def _json_numbers(data: Any, dtype: DType, where: str, name: str) -> np.ndarray:
    want = dtype.numpy
    try:
        arr = np.array(data)
    except (ValueError, TypeError) as e:
        raise SchemaError(f"{where}: 'data' is not a rectangular array of numbers ({e})", tensor=name) from None
    kind = arr.dtype.kind
    if kind in "fO" and want.kind in "iu":
        # Integers beyond int64 make numpy infer float64 or object: check them as Python ints.
        flat = np.array(data, dtype=object).reshape(-1)
        if all(type(v) is int for v in flat):
            info = np.iinfo(want)
            lo, hi = (min(flat), max(flat)) if flat.size else (0, 0)
            if lo < info.min or hi > info.max:
                raise SchemaError(f"{where}: values [{lo}, {hi}] do not fit {dtype.value}", tensor=name)
            return np.array(data, dtype=want)
    if kind == "O" and want.kind == "f" and isinstance(data, list):
        # JSON has no NaN: orjson (and others) write it as null, so null reads back as NaN.
        flat = np.array(data, dtype=object).reshape(-1)
        if all(v is None or type(v) in (int, float) for v in flat):
            return np.array(data, dtype=np.float64).astype(want)
    if arr.size == 0 or arr.dtype == want:
        return arr.astype(want, copy=False)
    if kind not in "biuf":
        raise SchemaError(f"{where}: {dtype.value} 'data' must hold numbers, got {arr.dtype} values", tensor=name)
    if want.kind == "b" and kind != "b":
        raise SchemaError(f"{where}: BOOL 'data' must hold true/false, got {arr.dtype} values", tensor=name)
    if want.kind in "iu":
        if kind == "f":
            raise SchemaError(f"{where}: {dtype.value} 'data' holds non-integer numbers", tensor=name)
        info = np.iinfo(want)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise SchemaError(f"{where}: values [{lo}, {hi}] do not fit {dtype.value}", tensor=name)
    return arr.astype(want)


class TensorHead(NamedTuple):
    """A tensor's head, checked: its name, the ``where`` that messages start with, datatype, shape, element count."""

    name: str
    where: str
    dtype: DType
    shape: list[int]
    elements: int


def tensor_head(
    t: Any, kind: str = "input", max_elements: int = DEFAULT_MAX_ELEMENTS, spec: TensorSpec | None = None
) -> TensorHead:
    """Check a tensor object's name, datatype and shape (and ``spec``'s datatype) before reading its data.

    A shape of more than ``max_elements`` elements and a datatype other than ``spec``'s raise SchemaError.

    Example:
        >>> tensor_head({"name": "x", "datatype": "FP32", "shape": [2, 3]}).elements
        6
    """
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise SchemaError(f"each {kind} must be an object with a string 'name', got {str(t)[:80]}")
    name: str = t["name"]
    where = f"{kind} {name!r}"
    datatype = t.get("datatype")
    dtype = _DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise SchemaError(f"{where}: unknown datatype {datatype!r}; V2 datatypes are {sorted(_DTYPES)}", tensor=name)
    shape = _shape(t, where)
    check_declared(spec, dtype, shape)  # before the count: a BYTES chunk sent to FP32 is never split
    count = math.prod(shape)
    # Zero dims make the count 0, but numpy still refuses dims whose other product overflows: bound both.
    if count > max_elements or (count == 0 and math.prod(d for d in shape if d) > max_elements):
        raise SchemaError(
            f"{where}: shape {shape} holds {count} elements, more than the limit of {max_elements}", tensor=name
        )
    return TensorHead(name, where, dtype, shape, count)


def decode_tensor(
    t: Any,
    chunk: memoryview | None = None,
    *,
    kind: str = "input",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    spec: TensorSpec | None = None,
) -> tuple[str, np.ndarray]:
    """One V2 tensor object (and its binary chunk, if any) as ``(name, ndarray)``.

    A shape of more than ``max_elements`` elements raises SchemaError before any allocation, and so
    does a datatype other than ``spec``'s, the model input's (:func:`check_declared`).

    Example:
        >>> decode_tensor({"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2]})
        ('x', array([1, 2], dtype=int32))
    """
    name, where, dtype, shape, count = tensor_head(t, kind, max_elements, spec)
    if chunk is not None:
        if dtype is DType.BYTES:
            return name, _decode_bytes(chunk, count, where, name).reshape(shape)
        need = count * dtype.itemsize
        if len(chunk) != need:
            raise SchemaError(
                f"{where}: binary data has {len(chunk)} bytes, {dtype.value} shape {shape} needs {need}", tensor=name
            )
        return name, np.frombuffer(chunk, dtype=dtype.numpy).reshape(shape)
    if "data" not in t:
        raise SchemaError(f"{where}: no 'data' and no 'binary_data_size' parameter", tensor=name)
    data = t["data"]
    if dtype is DType.BYTES:
        flat = np.array(data, dtype=object).reshape(-1) if isinstance(data, list) else np.array([data], dtype=object)
        arr = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise SchemaError(f"{where}: BYTES 'data' must hold strings, got {type(v).__name__}", tensor=name)
            arr[i] = v.encode("utf-8")
    else:
        try:
            arr = _json_numbers(data, dtype, where, name)
        except SchemaError:
            raise
        except (ValueError, TypeError, OverflowError) as e:  # e.g. an integer beyond float64's range
            raise SchemaError(f"{where}: 'data' does not convert to {dtype.value} ({e})", tensor=name) from None
    if arr.size != count:
        raise SchemaError(f"{where}: shape {shape} needs {count} values, 'data' has {arr.size}", tensor=name)
    return name, arr.reshape(shape)


# -- large JSON bodies ------------------------------------------------------------------------------
#
# orjson turns a JSON array into a list of Python objects: 8 bytes of pointer per element, plus
# 24-32 bytes per float (measured: a 64 MiB body of ``0.5,0.5,...`` peaks at 834 MiB, ``0,0,...`` at
# 704 MiB), and it parses a whole document in one C call that holds the GIL (1.6 s for 64 MiB), so
# no other thread, the event loop included, runs meanwhile. Bodies above LEAN_BODY_SIZE therefore
# never give their large arrays to orjson whole: a scan (regular expressions, so C speed, in bounded
# steps) finds each long array that holds only numbers, null, true or false, cuts it out of the
# document, and parses it in slices of SLICE_BYTES straight into a preallocated numpy array of
# the declared dtype. What stays is the "tree" (names, shapes, parameters, BYTES strings): orjson
# parses it as before, and it may be at most ``max_json_tree`` bytes (413 above: send such data as
# binary tensor data). Peak memory is then the body plus the decoded tensors plus one slice, and the
# GIL is released between slices, so the server answers other requests while this one decodes.

LEAN_BODY_SIZE = 64 * 1024  # bodies up to this size take the plain path (no overhead for small requests)
SPAN_BYTES = 16 * 1024  # arrays shorter than this stay in the tree
SLICE_BYTES = 64 * 1024  # one orjson call + one numpy conversion: ~1 ms with the GIL, ~2.5 MiB of objects
SCAN_BYTES = 256 * 1024  # one regular-expression step of the scan
MAX_NESTING = 32  # numpy's limit on dimensions: deeper nested 'data' cannot be a tensor anyway
DEFAULT_MAX_JSON_TREE = 16 * 1024 * 1024

_SKIP = re.compile(rb'(?:"(?:[^"\\]++|\\.)*+"|[^"\[]++){0,4096}+')  # strings and non-'[' bytes
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NUMERIC_RUN = re.compile(rb"[-+.,\s0-9eEnultrfas\[\]]{0,%d}+" % SCAN_BYTES)
_BRACKETS = re.compile(rb"[\[\]]")
_COMMA = re.compile(rb",")
_SPAN_KEY = "\x00aimass-span"


class BodyTooLarge(SchemaError):
    """A JSON body whose non-numeric part is too large to parse into Python objects (HTTP 413)."""

    status_code = 413


def _array_end(buf: Any, start: int, end: int) -> tuple[int, bool]:
    """End (exclusive) of the array opening at ``start`` if it holds only number-like bytes, else -1,
    and whether it nests arrays.

    Runs of number-like bytes are matched in steps of SLICE_BYTES (each a bounded C call); the
    bracket depth is tracked over the brackets of each step only.
    """
    depth, pos, nested = 0, start, False
    while pos < end:
        run = _NUMERIC_RUN.match(buf, pos, end)
        stop = run.end() if run else pos
        if stop == pos:
            return -1, nested  # a string, object or stray byte inside: not a plain numeric array
        text = bytes(buf[pos:stop])
        opens, closes = text.count(b"["), text.count(b"]")
        if depth - closes > 0 and depth + opens <= MAX_NESTING:  # cannot close or nest too deep here
            depth, nested, pos = depth + opens - closes, nested or opens > 0, stop
            continue
        for m in _BRACKETS.finditer(buf, pos, stop):
            depth += 1 if m.group() == b"[" else -1
            if depth > 1:
                nested = True
                if depth > MAX_NESTING:
                    raise SchemaError(f"malformed JSON request: an array is nested more than {MAX_NESTING} levels deep")
            if depth == 0:
                return m.end(), nested
        pos = stop
    return -1, nested


def _cut_arrays(buf: Any, end: int, nonce: str) -> tuple[bytes, list[tuple[int, int, bool]]]:
    """The document with each long numeric array replaced by a placeholder, and those arrays' spans."""
    pieces: list[Any] = []
    spans: list[tuple[int, int, bool]] = []
    view = memoryview(buf)
    pos = done = 0
    while pos < end:
        m = _SKIP.match(buf, pos, end)
        nxt = m.end() if m else pos
        if nxt > pos:
            pos = nxt
            continue
        if buf[pos : pos + 1] == b'"':  # a string the bounded step did not finish: scan it alone
            s = _STRING.match(buf, pos, end)
            if s is None:
                break  # unterminated: orjson will say so
            pos = s.end()
            continue
        # buf[pos] is '[' outside any string
        close, nested = _array_end(buf, pos, end)
        if close - pos >= SPAN_BYTES:
            pieces += [view[done:pos], b'{"\\u0000aimass-span":"%s","i":%d}' % (nonce.encode(), len(spans))]
            spans.append((pos, close, nested))
            pos = done = close
        else:
            pos += 1
    pieces.append(view[done:end])
    return b"".join(pieces), spans


def _span_ref(value: Any, nonce: str) -> int | None:
    if type(value) is dict and value.get(_SPAN_KEY) == nonce and type(value.get("i")) is int:
        return int(value["i"])
    return None


def _decode_span(buf: Any, span: tuple[int, int, bool], dtype: DType, count: int, where: str, name: str) -> np.ndarray:
    """A numeric array's text, parsed slice by slice into a new array of ``count`` elements."""
    start, stop, nested = span
    out = np.empty(count, dtype=dtype.numpy)
    view = memoryview(buf)
    filled, pos, last = 0, start, stop - 1  # buf[start] is '[' and buf[last] is ']'
    while pos < last:
        cut = min(pos + 1 + SLICE_BYTES, last)
        if cut < last:  # end each slice after a comma, so no number is cut in two
            comma = _COMMA.search(buf, cut, last)
            cut = comma.start() if comma else last
        text = bytes(view[pos + 1 : cut])
        pos = cut
        if nested:
            # Nested rows are read in row-major order, their brackets dropped: the declared shape
            # decides the tensor's shape (as on the plain path, where only the count must agree).
            text = text.replace(b"[", b"").replace(b"]", b"")
        if not text.strip():
            continue
        try:
            values = orjson.loads(b"[" + text + b"]")
        except orjson.JSONDecodeError as e:
            raise SchemaError(f"malformed JSON request: {where} 'data' near byte {pos}: {e}", tensor=name) from None
        if filled + len(values) > count:
            raise SchemaError(f"{where}: shape needs {count} values, 'data' has more", tensor=name)
        try:
            out[filled : filled + len(values)] = _json_numbers(values, dtype, where, name).reshape(-1)
        except SchemaError:
            raise
        except (ValueError, TypeError, OverflowError) as e:
            raise SchemaError(f"{where}: 'data' does not convert to {dtype.value} ({e})", tensor=name) from None
        filled += len(values)
    if filled != count:
        raise SchemaError(f"{where}: shape needs {count} values, 'data' has {filled}", tensor=name)
    return out


# -- messages -------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Cut:
    """The long numeric arrays cut out of a large JSON document, for the tensors whose 'data' they are."""

    buf: Any
    spans: list[tuple[int, int, bool]]
    nonce: str
    used: set[int] = dataclasses.field(default_factory=set)


def _load_json(
    body: bytes | memoryview, header_length: int | None, what: str, max_json_tree: int | None = None
) -> tuple[dict[str, Any], memoryview, _Cut | None]:
    view = memoryview(body)
    if header_length is None:
        header, rest = view, view[len(view) :]
    else:
        if not 0 <= header_length <= len(view):
            raise SchemaError(f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes")
        header, rest = view[:header_length], view[header_length:]
    cut = None
    if max_json_tree is not None and len(header) > LEAN_BODY_SIZE:
        cut = _Cut(header, [], os.urandom(8).hex())
        tree, cut.spans = _cut_arrays(header, len(header), cut.nonce)
        if len(tree) > max_json_tree:
            raise BodyTooLarge(
                f"the JSON {what} holds {len(tree)} bytes besides numeric tensor data, more than the limit of "
                f"{max_json_tree}: send large BYTES tensors as binary tensor data (binary_data_size)"
            )
        header = memoryview(tree)
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e):
            raise SchemaError(f"malformed JSON {what}: nested more than 1024 levels deep ({e})") from None
        raise SchemaError(f"malformed JSON {what}: {e}") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"the {what} must be a JSON object, got {type(doc).__name__}")
    return doc, rest, cut


def _binary_size(t: Any) -> int | None:
    params = t.get("parameters") if isinstance(t, dict) else None
    if not params:
        return None
    if not isinstance(params, dict):
        raise SchemaError(f"tensor {t.get('name')!r}: 'parameters' must be an object, got {type(params).__name__}")
    if "shared_memory_region" in params:
        raise SchemaError(
            f"tensor {t.get('name')!r}: the shared-memory extension is not supported", tensor=t.get("name")
        )
    size = params.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise SchemaError(f"tensor {t.get('name')!r}: binary_data_size must be a non-negative integer, got {size!r}")
    return size


def _decode_tensors(
    items: Any,
    rest: memoryview,
    kind: str,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    cut: _Cut | None = None,
    specs: Mapping[str, TensorSpec] | None = None,
) -> dict[str, np.ndarray]:
    if not isinstance(items, list):
        raise SchemaError(f"'{kind}s' must be a list of tensors, got {type(items).__name__}")
    sizes = [_binary_size(t) for t in items]
    total = sum(s for s in sizes if s is not None)
    if total != len(rest):
        raise SchemaError(
            f"binary data sizes add up to {total} bytes but the body carries {len(rest)} bytes after the JSON header"
        )
    out: dict[str, np.ndarray] = {}
    pos = 0
    for t, size in zip(items, sizes, strict=True):
        chunk = None
        if size is not None:
            chunk = rest[pos : pos + size]
            pos += size
        ref = _span_ref(t.get("data"), cut.nonce) if cut is not None and chunk is None and isinstance(t, dict) else None
        spec = specs.get(t["name"]) if specs and isinstance(t, dict) and isinstance(t.get("name"), str) else None
        if cut is not None and ref is not None:
            name, arr = _decode_cut_tensor(t, cut, ref, kind, max_elements, spec)
        else:
            name, arr = decode_tensor(t, chunk, kind=kind, max_elements=max_elements, spec=spec)
        if name in out:
            raise SchemaError(f"{kind} {name!r} appears twice", tensor=name)
        out[name] = arr
    if cut is not None and len(cut.used) != len(cut.spans):
        start, stop, _ = next(sp for i, sp in enumerate(cut.spans) if i not in cut.used)
        raise SchemaError(
            f"a numeric array of {stop - start} bytes (at byte {start}) is not an input's 'data': "
            "large arrays are only accepted as tensor data"
        )
    return out


def _decode_cut_tensor(
    t: dict[str, Any], cut: _Cut, ref: int, kind: str, max_elements: int, spec: TensorSpec | None
) -> tuple[str, np.ndarray]:
    name, where, dtype, shape, count = tensor_head(t, kind, max_elements, spec)
    if ref in cut.used or not 0 <= ref < len(cut.spans):
        raise SchemaError(f"{where}: 'data' is not a JSON array", tensor=name)
    cut.used.add(ref)
    start, stop, _ = cut.spans[ref]
    if dtype is DType.BYTES:
        raise SchemaError(f"{where}: BYTES 'data' must hold strings, got numbers", tensor=name)
    # Each element takes at least two bytes ("0,"): refuse a shape the text cannot fill before allocating.
    if count > (stop - start) // 2:
        raise SchemaError(
            f"{where}: shape {shape} needs {count} values, 'data' of {stop - start} bytes holds at most "
            f"{(stop - start) // 2}",
            tensor=name,
        )
    return name, _decode_span(cut.buf, cut.spans[ref], dtype, count, where, name).reshape(shape)


def decode_request(
    body: bytes | memoryview,
    header_length: int | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_json_tree: int = DEFAULT_MAX_JSON_TREE,
    schema: Schema | None = None,
) -> InferRequest:
    """Parse a V2 inference request body (``header_length`` from ``Inference-Header-Content-Length``).

    ``max_elements`` bounds each input tensor's element count (checked on the shape, before allocating).
    With the model's ``schema``, an input whose declared datatype is not the model's is refused from
    its head, before its data is read (:func:`check_declared`).
    A JSON header over :data:`LEAN_BODY_SIZE` bytes has its long numeric arrays parsed slice by slice
    into the tensors (peak memory: the body, the tensors and one slice; see the notes above
    :data:`LEAN_BODY_SIZE`); the rest of it may be at most ``max_json_tree`` bytes
    (:class:`BodyTooLarge`, HTTP 413, above).

    Example:
        >>> decode_request(b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}').inputs
        {'x': array([1.], dtype=float32)}
    """
    doc, rest, cut = _load_json(body, header_length, "request", max_json_tree)
    if "inputs" not in doc:
        raise SchemaError("the request has no 'inputs'")
    specs = None if schema is None else {spec.name: spec for spec in schema.inputs}
    inputs = _decode_tensors(doc["inputs"], rest, "input", max_elements, cut, specs)
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise SchemaError("request 'parameters' must be an object")
    outputs = None
    if doc.get("outputs") is not None:
        raw = doc["outputs"]
        if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
            raise SchemaError("request 'outputs' must be a list of objects with a string 'name'")
        outputs = []
        for o in raw:
            p = o.get("parameters") or {}
            flag = p.get("binary_data") if isinstance(p, dict) else None
            outputs.append(RequestedOutput(o["name"], None if flag is None else bool(flag)))
    rid = doc.get("id")
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=None if rid is None else str(rid),
        parameters=params,
        binary_output=bool(params.get("binary_data_output", False)),
    )


def check_datatypes(inputs: Mapping[str, np.ndarray], schema: Schema) -> None:
    """Refuse inputs whose declared datatype is not the model's: the wire is strict, as in Triton.

    ``inputs`` are decoded tensors (:func:`decode_request`, or the gRPC server's decoder), whose numpy
    dtype is exactly the declared V2 datatype. Local ``predict`` keeps the casts documented in
    :mod:`aimass.schema`; a V2 client states its datatype, so a different one is a client bug
    (SchemaError, HTTP 400 / gRPC INVALID_ARGUMENT) rather than something to guess at. Inputs the
    model does not have are left to :meth:`~aimass.schema.Schema.coerce`, which names them.

    Example:
        >>> from aimass.schema import Schema
        >>> s = Schema(inputs=[{"name": "x", "dtype": "FP32", "shape": [-1]}], outputs=[])
        >>> check_datatypes({"x": np.zeros(2, np.int32)}, s)
        Traceback (most recent call last):
        aimass.errors.SchemaError: input 'x': expected FP32 shape [-1], got int32 shape [2]: the request \
declares INT32, the model takes FP32 (V2 requests are not cast)
    """
    for spec in schema.inputs:
        arr = inputs.get(spec.name)
        if arr is None:
            continue
        want = spec.dtype.numpy
        got = arr.dtype
        if got is want or got == want:
            continue
        declared = DType.BYTES.value if got.kind in "OSU" else _V2_NAMES.get(got, str(got))
        raise _not_cast(spec, str(got), declared, arr.shape)


def check_declared(spec: TensorSpec | None, datatype: DType, shape: Sequence[int]) -> None:
    """Refuse an input whose declared datatype is not ``spec``'s, from its head (datatype and shape) alone.

    The decoders call it before they read a tensor's data, so a BYTES body sent to an FP32 input is
    refused without splitting a single element; the message is :func:`check_datatypes`'s. ``spec``
    None (an input the model does not have) passes: the schema names it later.

    Example:
        >>> from aimass.schema import TensorSpec
        >>> check_declared(TensorSpec(name="x", dtype="FP32", shape=[-1]), DType.BYTES, [3])
        Traceback (most recent call last):
        aimass.errors.SchemaError: input 'x': expected FP32 shape [-1], got object shape [3]: the request \
declares BYTES, the model takes FP32 (V2 requests are not cast)
    """
    if spec is not None and spec.dtype is not datatype:
        raise _not_cast(spec, str(datatype.numpy), datatype.value, shape)


def _not_cast(spec: TensorSpec, got: str, declared: str, shape: Sequence[int]) -> SchemaError:
    return SchemaError(
        f"input {spec.name!r}: expected {spec.dtype.value} shape {list(spec.shape)}, got {got} shape "
        f"{list(shape)}: the request declares {declared}, the model takes {spec.dtype.value} "
        "(V2 requests are not cast)",
        tensor=spec.name,
    )


def _assemble(doc: dict[str, Any], chunks: list[Any]) -> tuple[bytes, int | None]:
    header = orjson.dumps(doc, option=_NUMPY_OPT)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode_request(
    inputs: Mapping[str, Any],
    *,
    outputs: Sequence[str] | None = None,
    binary: bool | Collection[str] = False,
    binary_output: bool = False,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encode a request: the body and the HTTP headers to send with it.

    ``binary`` is True (all inputs), False, or the names of the inputs to send as binary data;
    ``binary_output`` asks for binary outputs.

    Example:
        >>> body, headers = encode_request({"x": np.ones((1, 4), np.float32)})
        >>> headers["content-type"]
        'application/json'
    """
    tensors, chunks = [], []
    for name, value in inputs.items():
        as_binary = binary if isinstance(binary, bool) else name in binary
        obj, chunk = encode_tensor(name, value, binary=as_binary)
        tensors.append(obj)
        if chunk is not None:
            chunks.append(chunk)
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    params = dict(parameters or {})
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_output}} for n in outputs]
    elif binary_output:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    doc["inputs"] = tensors
    body, header_length = _assemble(doc, chunks)
    if header_length is None:
        return body, {"content-type": JSON_CONTENT_TYPE}
    return body, {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(header_length)}


def encode_response(
    outputs: Mapping[str, np.ndarray],
    *,
    model_name: str,
    model_version: str | None = None,
    request_id: str | None = None,
    binary: Collection[str] = (),
) -> tuple[bytes, int | None]:
    """Encode a response: the body and the JSON header length (None when nothing is binary).

    Example:
        >>> body, n = encode_response({"y": np.zeros(2, np.float32)}, model_name="m", model_version="1")
        >>> body
        b'{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[0.0,0.0]}]}'
    """
    tensors, chunks = [], []
    for name, value in outputs.items():
        obj, chunk = encode_tensor(name, value, binary=name in binary, kind="output")
        tensors.append(obj)
        if chunk is not None:
            chunks.append(chunk)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = tensors
    return _assemble(doc, chunks)


def decode_response(body: bytes | memoryview, header_length: int | None = None) -> InferResponse:
    """Parse a V2 inference response (ours, Triton's or MLServer's).

    Example:
        >>> body = b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "INT64", "shape": [1], "data": [3]}]}'
        >>> decode_response(body).outputs
        {'y': array([3])}
    """
    doc, rest, _ = _load_json(body, header_length, "response")
    outputs = _decode_tensors(doc.get("outputs", []), rest, "output")
    version = doc.get("model_version")
    rid = doc.get("id")
    return InferResponse(
        outputs=outputs,
        model_name=str(doc.get("model_name", "")),
        model_version=None if version is None else str(version),
        id=None if rid is None else str(rid),
        parameters=doc.get("parameters") or {},
    )
