"""Tensor types, tensor specs and model schemas, and the one place user input is validated.

Every backend, the V2 codec and the server speak the same types: a :class:`DType` (the Open
Inference Protocol's names), a :class:`TensorSpec` (name, dtype, shape with ``-1`` for dynamic
dimensions) and a :class:`Schema` (inputs and outputs). :meth:`Schema.coerce` turns whatever a
user passes (a dict, a single array, a list, a pandas DataFrame) into ``dict[str, np.ndarray]``
exactly once, at the edge.

Casting rules (documented, never silent data loss):

* identical dtype: passed through without a copy;
* float -> narrower float (``float64`` -> ``float32``/``float16``): allowed, it is the usual way
  numpy data meets FP32 models;
* int/bool -> float, bool -> int, int -> wider int: allowed;
* int -> narrower int or signed <-> unsigned: allowed only when every value fits, checked;
* float -> int or bool, anything -> BOOL from non-bool, numbers <-> BYTES: refused with
  :class:`~aimass.errors.SchemaError`;
* BYTES (text and encoded files): a ``list[str]``, or a numpy array of ``str``/``bytes``/objects,
  becomes an object array of ``bytes`` (``str`` encoded as UTF-8), whatever the caller sent; an
  element that is neither ``str`` nor ``bytes`` is refused. :func:`as_text` decodes them for models
  that need text, and :func:`text_or_bytes` is how ``Model.predict`` returns BYTES outputs.

Example:
    >>> import numpy as np
    >>> from aimass.schema import Schema, TensorSpec
    >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
    ...            outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, 1])])
    >>> s.coerce(np.zeros((2, 4)))["x"].dtype
    dtype('float32')
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from aimass.errors import SchemaError

__all__ = ["DType", "Schema", "TensorSpec", "as_text", "text_or_bytes"]


class DType(enum.StrEnum):
    """Tensor element types, named as in the Open Inference Protocol (KServe V2 / Triton).

    Example:
        >>> DType.from_numpy(np.float32), DType.FP32.numpy
        (<DType.FP32: 'FP32'>, dtype('float32'))
    """

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype that holds this type (``object`` for BYTES)."""
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element (0 for BYTES, whose elements vary in length)."""
        return 0 if self is DType.BYTES else _TO_NUMPY[self].itemsize

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """The V2 type of a numpy dtype (or anything ``np.dtype`` accepts)."""
        dt = np.dtype(dtype)
        if dt.kind in "OSU":
            return cls.BYTES
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise SchemaError(f"numpy dtype {dt} has no V2 tensor type") from None

    @classmethod
    def parse(cls, value: Any) -> DType:
        """Accept a DType, a V2 name (``"FP32"``), a numpy name (``"float32"``) or a numpy dtype."""
        if isinstance(value, DType):
            return value
        if isinstance(value, str):
            upper = value.upper()
            if upper in cls.__members__:
                return cls[upper]
            if upper.startswith("TYPE_"):  # Triton model-config spelling
                return cls.parse(value[5:])
        try:
            return cls.from_numpy(value)
        except TypeError:
            raise SchemaError(f"unknown tensor type {value!r}") from None


_TO_NUMPY: dict[DType, np.dtype[Any]] = {
    DType.BOOL: np.dtype(np.bool_),
    DType.UINT8: np.dtype(np.uint8),
    DType.UINT16: np.dtype(np.uint16),
    DType.UINT32: np.dtype(np.uint32),
    DType.UINT64: np.dtype(np.uint64),
    DType.INT8: np.dtype(np.int8),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64),
    DType.FP16: np.dtype(np.float16),
    DType.FP32: np.dtype(np.float32),
    DType.FP64: np.dtype(np.float64),
    DType.BYTES: np.dtype(object),
}
_FROM_NUMPY: dict[np.dtype[Any], DType] = {v: k for k, v in _TO_NUMPY.items() if k is not DType.BYTES}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class TensorSpec(BaseModel):
    """One named tensor: V2 dtype and shape (``-1`` marks a dynamic dimension).

    Example:
        >>> TensorSpec(name="x", dtype="FP32", shape=[-1, 4])
        TensorSpec(name='x', dtype=<DType.FP32: 'FP32'>, shape=[-1, 4])
    """

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: DType
    shape: list[int] = Field(default_factory=list)

    @field_validator("dtype", mode="before")
    @classmethod
    def _parse_dtype(cls, v: Any) -> DType:
        return DType.parse(v)

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, v: list[int]) -> list[int]:
        if any(d < -1 for d in v):
            raise ValueError(f"shape {v}: dimensions must be >= 0 or -1 (dynamic)")
        return v

    def __repr__(self) -> str:
        return f"TensorSpec(name={self.name!r}, dtype={self.dtype!r}, shape={self.shape})"

    def describe(self) -> str:
        """``"FP32 [-1, 4]"``: the text used in error messages."""
        return f"{self.dtype.value} {_shape_text(self.shape)}"

    def matches_shape(self, shape: Sequence[int]) -> bool:
        """Whether a concrete shape fits this spec."""
        return len(shape) == len(self.shape) and all(
            want == -1 or want == got for want, got in zip(self.shape, shape, strict=True)
        )


_Check = tuple[str, "np.dtype[Any]", int, tuple[tuple[int, int], ...], TensorSpec]


class Schema(BaseModel):
    """The inputs and outputs of a model, and the validator of user input.

    Example:
        >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])], outputs=[])
        >>> s.input_names
        ['x']
    """

    model_config = ConfigDict(frozen=True)

    inputs: list[TensorSpec]
    outputs: list[TensorSpec] = Field(default_factory=list)
    _validator: Callable[[Any], dict[str, np.ndarray]] | None = PrivateAttr(default=None)

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique_names(cls, v: list[TensorSpec]) -> list[TensorSpec]:
        names = [t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tensor names {dupes}")
        return v

    def __eq__(self, other: object) -> bool:
        # Compare the declared tensors only, not the compiled validator.
        if not isinstance(other, Schema):
            return NotImplemented
        return self.inputs == other.inputs and self.outputs == other.outputs

    __hash__ = None  # type: ignore[assignment]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        """The spec of input ``name`` (SchemaError when there is none)."""
        for t in self.inputs:
            if t.name == name:
                return t
        raise SchemaError(f"model has no input {name!r}; inputs are {self.input_names}", tensor=name)

    def output(self, name: str) -> TensorSpec:
        """The spec of output ``name`` (SchemaError when there is none)."""
        for t in self.outputs:
            if t.name == name:
                return t
        raise SchemaError(f"model has no output {name!r}; outputs are {self.output_names}", tensor=name)

    def __str__(self) -> str:
        ins = ", ".join(f"{t.name}: {t.describe()}" for t in self.inputs)
        outs = ", ".join(f"{t.name}: {t.describe()}" for t in self.outputs)
        return f"({ins}) -> ({outs})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{kind}</td><td>{t.name}</td><td>{t.dtype.value}</td><td>{_shape_text(t.shape)}</td></tr>"
            for kind, specs in (("input", self.inputs), ("output", self.outputs))
            for t in specs
        )
        return f"<table><tr><th></th><th>name</th><th>dtype</th><th>shape</th></tr>{rows}</table>"

    def example(self, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
        """Synthetic inputs matching the schema, dynamic dimensions set to ``batch``.

        Floats are standard normal, integers zero (safe as embedding indices), BYTES empty.

        Example:
            >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])
            >>> s.example(batch=3)["x"].shape
            (3, 4)
        """
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = tuple(batch if d == -1 else d for d in t.shape)
            if t.dtype in (DType.FP16, DType.FP32, DType.FP64):
                out[t.name] = rng.standard_normal(shape).astype(t.dtype.numpy)
            elif t.dtype is DType.BYTES:
                out[t.name] = np.full(shape, b"", dtype=object)
            else:
                out[t.name] = np.zeros(shape, dtype=t.dtype.numpy)
        return out

    # -- validation -------------------------------------------------------------------------

    def coerce(self, data: Any) -> dict[str, np.ndarray]:
        """Validate user input against the inputs and return ``{name: ndarray}``.

        Accepts a mapping of name to array-like, a single array-like (one-input models), or a
        pandas DataFrame (one 2-D input takes the whole frame; otherwise columns by name).
        Raises :class:`~aimass.errors.SchemaError` naming the tensor, expected and actual
        dtype/shape.
        """
        return self.validator()(data)

    def validator(self) -> Callable[[Any], dict[str, np.ndarray]]:
        """The compiled form of :meth:`coerce`, built once per schema (``Model.predict`` binds it).

        The common cases (an ndarray for a one-input model, a dict with exactly the input names)
        take a path with no attribute look-ups beyond the array's own; everything else falls back
        to the general path with precise missing/extra-input messages.
        """
        fn = self._validator
        if fn is None:
            fn = self._validator = self._compile()
        return fn

    def _compile(self) -> Callable[[Any], dict[str, np.ndarray]]:
        checks = tuple(
            (t.name, t.dtype.numpy, len(t.shape), tuple((i, d) for i, d in enumerate(t.shape) if d != -1), t)
            for t in self.inputs
        )
        general = self._coerce_mapping
        named = self.named
        count = len(checks)
        ndarray = np.ndarray

        if count == 1:
            (only,) = checks
            only_name = only[0]

            def coerce_one(data: Any) -> dict[str, np.ndarray]:
                kind = type(data)
                if kind is ndarray:
                    return {only_name: _check(only, data)}
                if kind is dict and len(data) == 1 and only_name in data:
                    return {only_name: _check(only, data[only_name])}
                return general(named(data), checks)

            return coerce_one

        def coerce_many(data: Any) -> dict[str, np.ndarray]:
            if type(data) is dict and len(data) == count:
                try:
                    return {c[0]: _check(c, data[c[0]]) for c in checks}
                except KeyError:
                    pass  # a name is missing: the general path says which
            return general(named(data), checks)

        return coerce_many

    def _coerce_mapping(self, data: Mapping[str, Any], checks: tuple[_Check, ...]) -> dict[str, np.ndarray]:
        names = [c[0] for c in checks]
        missing = [n for n in names if n not in data]
        if missing:
            spec = self.input(missing[0])
            raise SchemaError(
                f"missing input {spec.name!r} (expected {spec.describe()}); got inputs {sorted(map(str, data))}",
                tensor=spec.name,
            )
        extra = sorted(str(k) for k in data if k not in names)
        if extra:
            raise SchemaError(f"unexpected input {extra[0]!r}; model inputs are {names}", tensor=extra[0])
        return {c[0]: _check(c, data[c[0]]) for c in checks}

    def named(self, data: Any) -> Mapping[str, Any]:
        """The user's input as ``{input name: value}``, without validating or converting values."""
        if isinstance(data, Mapping):
            return data
        if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
            return self._from_dataframe(data)
        if len(self.inputs) != 1:
            raise SchemaError(
                f"model has {len(self.inputs)} inputs {self.input_names}: pass a dict of name -> array",
            )
        return {self.inputs[0].name: data}

    def _from_dataframe(self, df: Any) -> dict[str, Any]:
        columns = [str(c) for c in df.columns]
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 and self.inputs[0].name not in columns:
            return {self.inputs[0].name: df.to_numpy()}
        out: dict[str, Any] = {}
        for spec in self.inputs:
            if spec.name not in columns:
                raise SchemaError(
                    f"missing input {spec.name!r} (expected {spec.describe()}): DataFrame columns are {columns}",
                    tensor=spec.name,
                )
            col = df[spec.name].to_numpy()
            out[spec.name] = col.reshape(-1, 1) if len(spec.shape) == 2 and spec.shape[1] == 1 else col
        return out


def _check(c: _Check, value: Any) -> np.ndarray:
    name, want, ndim, fixed, spec = c
    arr = value if type(value) is np.ndarray else _to_array(value, spec)
    shape = arr.shape
    if len(shape) != ndim:
        raise SchemaError(_mismatch(spec, arr), tensor=name)
    for i, d in fixed:
        if shape[i] != d:
            raise SchemaError(_mismatch(spec, arr), tensor=name)
    dtype = arr.dtype
    if want is _OBJECT:  # BYTES: every element becomes bytes (str as UTF-8); numbers are refused
        return _bytes_elements(arr if dtype is _OBJECT else _cast(arr, spec), spec)
    if dtype is not want and dtype != want:  # builtin dtypes are singletons: `is` settles the usual case
        return _cast(arr, spec)
    return arr


_OBJECT = np.dtype(object)


def _bytes_elements(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A BYTES input as an object array of ``bytes``: ``str`` elements encoded as UTF-8, others refused."""
    flat = arr.reshape(-1)
    if all(type(v) is bytes for v in flat):
        return arr
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        if isinstance(v, bytes):
            out[i] = bytes(v)
        elif isinstance(v, str):
            out[i] = v.encode("utf-8")
        else:
            where = f" at index {i}" if flat.size > 1 else ""
            raise SchemaError(
                _mismatch(spec, arr, f": BYTES elements must be str or bytes, got {type(v).__name__}{where}"),
                tensor=spec.name,
            )
    return out.reshape(arr.shape)


def as_text(values: np.ndarray, name: str, kind: str = "input") -> np.ndarray:
    """BYTES elements as ``str`` (same shape); SchemaError naming the tensor and element for invalid UTF-8.

    For models that need text (tokenizers): raw bytes sent over the wire may be anything.

    Example:
        >>> as_text(np.array([b"caf\\xc3\\xa9", "ok"], dtype=object), "text").tolist()
        ['café', 'ok']
    """
    flat = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        if isinstance(v, str):
            out[i] = v
            continue
        if not isinstance(v, bytes):
            raise SchemaError(f"{kind} {name!r}: element {i} is {type(v).__name__}, not text", tensor=name)
        try:
            out[i] = v.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SchemaError(
                f"{kind} {name!r}: element {i} is not UTF-8 text (byte 0x{v[e.start]:02x} at offset {e.start}); "
                "this tensor takes text",
                tensor=name,
            ) from None
    return out.reshape(np.shape(values))


def text_or_bytes(values: np.ndarray) -> np.ndarray:
    """A BYTES output as ``str`` elements when every element is UTF-8, else unchanged (encoded files stay bytes).

    ``Model.predict`` applies it to BYTES outputs, so labels read as ``str`` locally and remotely alike.

    Example:
        >>> text_or_bytes(np.array([b"cat", b"dog"], dtype=object)).tolist()
        ['cat', 'dog']
        >>> text_or_bytes(np.array([b"\\x89PNG"], dtype=object)).tolist()
        [b'\\x89PNG']
    """
    if values.dtype != _OBJECT:
        return values
    flat = values.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    try:
        for i, v in enumerate(flat):
            out[i] = v.decode("utf-8") if isinstance(v, bytes) else v
    except UnicodeDecodeError:
        return values
    return out.reshape(values.shape)


def _mismatch(spec: TensorSpec, arr: np.ndarray, why: str = "") -> str:
    got = f"{arr.dtype} shape {_shape_text(arr.shape)}"
    return f"input {spec.name!r}: expected {spec.dtype.value} shape {_shape_text(spec.shape)}, got {got}{why}"


def _to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    if hasattr(value, "__dlpack__") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else value.cpu().numpy()
    elif hasattr(value, "to_numpy"):
        value = value.to_numpy()
    try:
        if spec.dtype is DType.BYTES:
            return np.asarray(value, dtype=object)
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise SchemaError(
            f"input {spec.name!r}: expected {spec.describe()}, got {type(value).__name__} "
            f"that is not a rectangular array ({e})",
            tensor=spec.name,
        ) from None


def _cast(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    src, dst = arr.dtype, spec.dtype.numpy
    if spec.dtype is DType.BYTES:
        if src.kind in "OSU":
            return arr.astype(object)
        raise SchemaError(_mismatch(spec, arr, ": numbers are not BYTES"), tensor=spec.name)
    if src.kind in "OSU":
        raise SchemaError(_mismatch(spec, arr, ": strings are not numbers"), tensor=spec.name)
    if dst.kind == "b":
        raise SchemaError(_mismatch(spec, arr, ": only bool casts to BOOL"), tensor=spec.name)
    if src.kind in "fc" and dst.kind in "iu":
        raise SchemaError(_mismatch(spec, arr, ": float -> int would lose data"), tensor=spec.name)
    if src.kind == "c" and dst.kind != "c":
        raise SchemaError(_mismatch(spec, arr, ": complex values have no real type"), tensor=spec.name)
    if src.kind in "iu" and dst.kind in "iu" and not np.can_cast(src, dst, "safe") and arr.size:
        info = np.iinfo(dst)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise SchemaError(
                _mismatch(spec, arr, f": values [{lo}, {hi}] do not fit {spec.dtype.value}"), tensor=spec.name
            )
    return arr.astype(dst)
