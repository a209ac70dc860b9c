"""Devices: which CUDA devices are visible, device tensors passed in by DLPack, and output placement.

Shared by every backend that runs on a GPU, so that "no GPU here" reads the same everywhere and a
torch or CuPy CUDA tensor handed to ``predict`` stays on the GPU instead of making a round trip
through host memory.

* :func:`check_device` parses ``"cpu"``/``"cuda"``/``"cuda:N"`` and raises
  :class:`~aimass.errors.DeviceError` when the CUDA device is not visible. It asks the NVIDIA
  driver itself (``libcuda``), so it needs no framework and gives the same answer for every backend.
* :class:`DeviceInputs` validates inputs for a model on a device: device tensors (anything with
  ``__dlpack__``/``__dlpack_device__`` living on that device) are checked against the schema and
  passed through without a copy; everything else goes through :meth:`Schema.coerce` as usual.
* :func:`output_on_device` reads the ``output`` option: ``"numpy"`` (the default) or
  ``"device"`` (outputs stay on the model's device as DLPack-capable framework tensors).

Example:
    >>> from aimass.device import check_device
    >>> check_device("cpu")
    ('cpu', 0)
    >>> check_device("cuda:0")   # doctest: +SKIP
    Traceback (most recent call last):
    aimass.errors.DeviceError: device 'cuda:0': no CUDA device is visible (...)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.errors import DeviceError, ModelLoadError, SchemaError
from aimass.schema import DType, Schema, TensorSpec

if TYPE_CHECKING:
    from aimass.backends.base import Backend

__all__ = [
    "DeviceInputs",
    "check_device",
    "cuda_device_count",
    "device_tensor_dtype",
    "as_torch_tensor",
    "input_validator",
    "split_device",
    "is_device_tensor",
    "output_on_device",
    "synchronize_producer",
]

# DLPack device types (dlpack.h, DLDeviceType): where a tensor's memory lives.
_DL_CPU = 1
_DL_CUDA = 2
_DL_CUDA_MANAGED = 13

_CUDA_ERRORS = {
    34: "CUDA_ERROR_STUB_LIBRARY",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    100: "CUDA_ERROR_NO_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}


@functools.cache
def split_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``.

    Example:
        >>> split_device("cuda:1")
        ('cuda', 1)
    """
    kind, _, index = device.partition(":")
    kind = kind.lower()
    if kind == "gpu":
        kind = "cuda"
    if kind not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    try:
        return kind, int(index) if index else 0
    except ValueError:
        raise DeviceError(f"unknown device {device!r}: the index after ':' must be an integer") from None


def _driver_probe() -> tuple[int, str]:
    # The driver API, not a framework: every backend gets the same answer, and nothing heavy is
    # imported. Cached because cuInit reads CUDA_VISIBLE_DEVICES once per process anyway.
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", ctypes.util.find_library("cuda")]
    lib = None
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return 0, "no NVIDIA driver: libcuda was not found"
    status = lib.cuInit(0)
    if status != 0:
        return 0, f"cuInit failed with {_CUDA_ERRORS.get(status, f'CUDA error {status}')}"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status != 0:
        return 0, f"cuDeviceGetCount failed with CUDA error {status}"
    return count.value, f"{count.value} visible"


def cuda_device_count() -> int:
    """Number of CUDA devices the NVIDIA driver shows this process (0 without a driver or GPU).

    Example:
        >>> cuda_device_count() >= 0
        True
    """
    return _driver_probe()[0]


def check_device(device: str) -> tuple[str, int]:
    """Parse ``device`` and make sure it exists; ``("cuda", 1)`` for ``"cuda:1"``.

    Raises :class:`~aimass.errors.DeviceError` saying no CUDA device is visible when there is none
    (and why: no driver, ``CUDA_VISIBLE_DEVICES`` empty ...), or when the index is out of range.

    Example:
        >>> check_device("cpu")
        ('cpu', 0)
    """
    kind, index = split_device(device)
    if kind == "cuda":
        count, why = _driver_probe()
        if count == 0:
            hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
            if hidden is not None and not hidden.strip():
                why += "; CUDA_VISIBLE_DEVICES is set to an empty value"
            raise DeviceError(f"device {device!r}: no CUDA device is visible ({why})")
        if index >= count:
            raise DeviceError(f"device {device!r}: only {count} CUDA device(s) visible (cuda:0 .. cuda:{count - 1})")
    return kind, index


def output_on_device(options: Mapping[str, Any]) -> bool:
    """Whether ``options["output"]`` asks for outputs left on the device (``"device"``) or numpy (default).

    Example:
        >>> output_on_device({"output": "device"}), output_on_device({})
        (True, False)
    """
    mode = options.get("output", "numpy")
    if mode not in ("numpy", "device"):
        raise ModelLoadError(f"option output={mode!r}: use 'numpy' (the default) or 'device'")
    return mode == "device"


def is_device_tensor(value: Any, kind: str = "cuda", index: int = 0) -> bool:
    """Whether ``value`` is a DLPack tensor living on ``kind:index`` (numpy arrays never are).

    ``kind="cpu"`` matches host-memory framework tensors (a torch CPU tensor), not numpy arrays.

    Example:
        >>> is_device_tensor(np.zeros(2), "cpu")
        False
    """
    if type(value) is np.ndarray or not hasattr(value, "__dlpack_device__"):
        return False
    dev_type, dev_id = value.__dlpack_device__()
    if kind == "cpu":
        return int(dev_type) == _DL_CPU
    return int(dev_type) in (_DL_CUDA, _DL_CUDA_MANAGED) and int(dev_id) == index


def device_tensor_dtype(value: Any) -> np.dtype[Any]:
    """The numpy dtype of a torch/CuPy/other DLPack tensor, read without importing its framework.

    Example:
        >>> import torch
        >>> device_tensor_dtype(torch.zeros(2, dtype=torch.float16))
        dtype('float16')
    """
    name = str(value.dtype).removeprefix("torch.")
    try:
        dtype = np.dtype(name)
    except TypeError:
        raise SchemaError(f"tensor type {value.dtype} has no numpy equivalent (bfloat16 is not a V2 type)") from None
    DType.from_numpy(dtype)  # SchemaError for types with no V2 name (bfloat16 once ml_dtypes registers it)
    return dtype


def synchronize_producer(value: Any) -> None:
    """Wait until the CUDA work that produced ``value`` (on its framework's current stream) is done.

    For consumers that read the memory on a stream of their own (onnxruntime's): the DLPack import
    does not order the two streams. Host tensors and unknown producers are left alone.

    Example:
        >>> import torch
        >>> synchronize_producer(torch.zeros(2))   # a CPU tensor: nothing to wait for
    """
    if not is_device_tensor(value, "cuda", value.__dlpack_device__()[1]):
        return
    module = type(value).__module__.partition(".")[0]
    if module == "torch":
        sys.modules["torch"].cuda.current_stream(value.device).synchronize()
    elif module == "cupy":
        sys.modules["cupy"].cuda.get_current_stream().synchronize()


def _cast_device_tensor(value: Any, dtype: np.dtype[Any]) -> Any:
    if hasattr(value, "astype"):  # CuPy, and any numpy-like device array
        return value.astype(dtype)
    torch = sys.modules["torch"]  # a torch tensor came in, so torch is imported
    return value.to(dtype=getattr(torch, dtype.name))


def _shape_text(shape: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class DeviceInputs:
    """Input validation for a model on a device: device tensors are checked and kept, the rest coerced.

    Same rules and messages as :meth:`Schema.coerce`, except that a device tensor is never copied
    to the host: its shape must match, and its dtype must match or be a float of another width
    (cast on the device, like float64 -> float32 on the host).

    Example:
        >>> import torch
        >>> from aimass.schema import Schema, TensorSpec
        >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])
        >>> t = torch.zeros(2, 4)
        >>> DeviceInputs(s, "cpu")({"x": t})["x"] is t
        True
    """

    __slots__ = ("_coerce", "_index", "_kind", "_schema", "_single", "_specs")

    def __init__(self, schema: Schema, device: str) -> None:
        self._schema = schema
        self._coerce = schema.validator()
        self._kind, self._index = split_device(device)
        self._specs = {t.name: t for t in schema.inputs}
        # One-tensor schemas let host values reuse Schema.coerce's rules and messages unchanged.
        self._single = {t.name: Schema(inputs=[t]) for t in schema.inputs}

    def __call__(self, data: Any) -> dict[str, Any]:
        named = self._schema.named(data)
        kept = [k for k, v in named.items() if is_device_tensor(v, self._kind, self._index)]
        if not kept or set(named) != set(self._specs):
            return self._coerce(data)  # host data, or missing/extra names: Schema.coerce words the error
        out: dict[str, Any] = {}
        for name, spec in self._specs.items():
            value = named[name]
            if name in kept:
                out[name] = self._check(spec, value)
            else:
                out[name] = self._single[name].coerce({name: value})[name]
        return out

    def _check(self, spec: TensorSpec, value: Any) -> Any:
        dtype = device_tensor_dtype(value)
        shape = tuple(int(d) for d in value.shape)
        where = f"{self._kind}:{self._index}" if self._kind == "cuda" else "cpu"
        got = f"{dtype} shape {_shape_text(shape)} ({where} tensor)"
        expected = f"input {spec.name!r}: expected {spec.dtype.value} shape {_shape_text(spec.shape)}, got {got}"
        if not spec.matches_shape(shape):
            raise SchemaError(expected, tensor=spec.name)
        want = spec.dtype.numpy
        if dtype == want:
            return value
        if dtype.kind == "f" and want.kind == "f":
            return _cast_device_tensor(value, want)
        raise SchemaError(f"{expected}: only float -> float casts happen on the device", tensor=spec.name)


def input_validator(backend: Backend) -> Callable[[Any], dict[str, Any]]:
    """The input validator ``Model.predict`` uses for ``backend``, chosen once per Model.

    On the CPU, or for a backend that cannot take device tensors, it is the schema's own compiled
    validator (so the CPU path does no extra work); on a CUDA device, for backends that declare
    ``device_inputs = True``, a :class:`DeviceInputs`.

    Example:
        >>> from aimass import Model
        >>> m = Model.load("mlp.onnx")                       # doctest: +SKIP
        >>> input_validator(m.backend) is m.schema.validator()   # doctest: +SKIP
        True
    """
    device = getattr(backend, "device", "cpu")
    if not str(device).startswith("cuda") or not getattr(backend, "device_inputs", False):
        return backend.schema.validator()
    return DeviceInputs(backend.schema, device)


def as_torch_tensor(torch: Any, value: Any) -> Any:
    """A numpy array, torch tensor or DLPack producer (CuPy...) as a torch tensor on the device it is on.

    Shares memory where it can; a read-only numpy array is copied (torch cannot wrap it).
    Example: ``as_torch_tensor(torch, np.ones((2, 4), np.float32)).shape == (2, 4)``
    """
    if type(value) is np.ndarray:
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_dlpack(value)  # CuPy and other DLPack producers: shared memory, no copy
