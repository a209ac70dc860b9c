"""ONNX models through onnxruntime.

Accepts a ``.onnx`` path, serialized model bytes or an ``onnx.ModelProto``. Weights kept in a
separate file (ONNX external data, e.g. ``encoder.onnx.data``) are read relative to the ``.onnx``
file, never the working directory, only from a plain file inside its directory (in a package, a
listed artifact), and embedded (:mod:`aimass.onnx_external_data`). The schema is read
from the session; execution providers follow the device (``cpu`` -> CPU EP, ``cuda:N`` -> CUDA EP
with CPU fallback, led by the TensorRT EP when this onnxruntime has it). ``options`` may hold
``session_options`` (an ``ort.SessionOptions`` or a dict of its attributes, e.g.
``{"intra_op_num_threads": 1}``, and dotted session config entries, e.g.
``{"session.intra_op.allow_spinning": "0"}``), ``disabled_optimizers`` (onnxruntime graph
optimizers to skip; on the CPU alone the default skips ``SkipLayerNormFusion``, whose kernel is
slower there than what it fuses; sessions led by CUDA, TensorRT or ROCm keep onnxruntime's
default), ``providers`` (overrides the device choice), ``tensorrt``
(``False`` keeps the TensorRT EP out), ``tensorrt_options`` (merged over the TensorRT EP defaults,
which cache built engines under ``~/.cache/aimass/onnxruntime-tensorrt``), ``output``
(``"device"`` returns ``OrtValue`` outputs left on the device, DLPack-capable) and ``io_binding``
(run through IOBinding on the CPU too; on CUDA it is always used, so torch/CuPy CUDA inputs are
bound in place rather than copied to the host and back).

Example:
    >>> from aimass import Model
    >>> m = Model.load("mlp.onnx", options={"session_options": {"intra_op_num_threads": 1}})  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import check_device, output_on_device, split_device, synchronize_producer
from aimass.errors import DeviceError, ModelLoadError, PredictionError, SchemaError
from aimass.onnx_external_data import embed_external_data, self_contained
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["CPU_DISABLED_OPTIMIZERS", "OnnxBackend"]

_ORT_TYPES: dict[str, DType] = {
    "tensor(bool)": DType.BOOL,
    "tensor(uint8)": DType.UINT8,
    "tensor(uint16)": DType.UINT16,
    "tensor(uint32)": DType.UINT32,
    "tensor(uint64)": DType.UINT64,
    "tensor(int8)": DType.INT8,
    "tensor(int16)": DType.INT16,
    "tensor(int32)": DType.INT32,
    "tensor(int64)": DType.INT64,
    "tensor(float16)": DType.FP16,
    "tensor(float)": DType.FP32,
    "tensor(double)": DType.FP64,
    "tensor(string)": DType.BYTES,
}


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _map_objects(arr: np.ndarray, fn: Any, name: str) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    try:
        for index, value in np.ndenumerate(arr):
            out[index] = fn(value)
    except UnicodeDecodeError as e:
        raise SchemaError(f"input {name!r}: BYTES element is not UTF-8, which onnxruntime strings need ({e})") from None
    return out


def _ort() -> Any:
    return require_framework("onnxruntime", backend="onnx", extra="onnx")


def _spec(arg: Any) -> TensorSpec:
    try:
        dtype = _ORT_TYPES[arg.type]
    except KeyError:
        raise ModelLoadError(f"ONNX tensor {arg.name!r} has type {arg.type}, which aimass does not map") from None
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


# onnxruntime's CPU SkipLayerNormalization kernel is up to 6.4x slower than the Add and
# LayerNormalization it replaces and never faster (benchmarks/onnx_skip_layernorm.py, hidden
# 64-1024: 1.0-2.5x at 8 tokens, 2.1-6.4x from 128 tokens up), yet its session optimizer fuses
# every Add -> LayerNormalization it finds. On a BERT encoder that was 20 % of an int8 forward
# pass. Sessions led by a GPU provider keep onnxruntime's default: the fusion was written for
# those kernels, and no GPU was at hand to measure them.
CPU_DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"})


def _provider_names(providers: Sequence[Any]) -> list[str]:
    """Names from a providers list whose entries are names or ``(name, options)`` pairs."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def _disabled_optimizers(options: Mapping[str, Any], providers: Sequence[Any]) -> list[str]:
    """``options["disabled_optimizers"]`` (a name or a list), else :data:`CPU_DISABLED_OPTIMIZERS` without a GPU."""
    given = options.get("disabled_optimizers")
    if isinstance(given, str):
        return [given]
    if isinstance(given, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in given):
        return list(given)
    if given is not None:
        raise ModelLoadError(
            f"option disabled_optimizers: expected an optimizer name or a list of names, "
            f"got {type(given).__name__} {given!r}"
        )
    on_gpu = GPU_PROVIDERS.intersection(_provider_names(providers))
    return [] if on_gpu else list(CPU_DISABLED_OPTIMIZERS)


def _config_value(value: Any) -> str:
    # onnxruntime reads switches such as allow_spinning as exactly "1" or "0"; str(True) is "True".
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _session_options(ort: Any, given: Any) -> Any:
    """An ``ort.SessionOptions`` from one, or from a dict of its attributes and dotted config entries.

    Keys with a dot are session configuration entries (``{"session.intra_op.allow_spinning": "0"}``,
    booleans as ``"1"``/``"0"``), the rest are attributes (``{"intra_op_num_threads": 1}``).
    """
    if isinstance(given, ort.SessionOptions):
        return given
    if given is not None and not isinstance(given, Mapping):
        raise ModelLoadError(
            f"option session_options: expected an onnxruntime.SessionOptions or a dict, got {type(given).__name__}"
        )
    so = ort.SessionOptions()
    for key, value in (given or {}).items():
        if "." in key:
            so.add_session_config_entry(key, _config_value(value))
        elif not hasattr(so, key):
            raise ModelLoadError(f"option session_options[{key!r}]: onnxruntime.SessionOptions has no such attribute")
        else:
            try:
                setattr(so, key, value)
            except TypeError:  # pybind11 names the C++ signature only
                expected = type(getattr(so, key)).__name__
                raise ModelLoadError(
                    f"option session_options[{key!r}]: expected {expected}, got {type(value).__name__} {value!r}"
                ) from None
    return so


def _providers(device: str, options: Mapping[str, Any]) -> list[Any]:
    kind, index = check_device(device)  # "no CUDA device is visible" before asking onnxruntime
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    available = _ort().get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(
            f"device {device!r}: onnxruntime here has no CUDAExecutionProvider (available: {available}); "
            "install onnxruntime-gpu on a machine with a CUDA GPU"
        )
    providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" in available and options.get("tensorrt", True):
        # Building TensorRT engines takes minutes: keep them across processes (the EP keys its cache
        # files by model and GPU itself).
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aimass" / "onnxruntime-tensorrt"
        cache.mkdir(parents=True, exist_ok=True)
        trt = {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        providers.insert(0, ("TensorrtExecutionProvider", {**trt, **options.get("tensorrt_options", {})}))
    return providers


class OnnxBackend(Backend):
    """An onnxruntime ``InferenceSession``."""

    name: ClassVar[str] = "onnx"
    framework: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str] = "onnx"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    type_modules: ClassVar[tuple[str, ...]] = ("onnx.onnx_ml_pb2", "onnx.onnx_pb", "onnx.onnx_ml_pb")
    device_inputs: ClassVar[bool] = True  # run() binds torch/CuPy CUDA tensors in place (aimass.device)

    def __init__(self, model_bytes: bytes, device: str, options: Mapping[str, Any], schema: Schema | None) -> None:
        ort = _ort()
        opts = _session_options(ort, options.get("session_options"))
        providers = options.get("providers") or _providers(device, options)
        disabled = _disabled_optimizers(options, providers)
        try:
            self.session = ort.InferenceSession(
                model_bytes, sess_options=opts, providers=providers, disabled_optimizers=disabled
            )
        except Exception as e:  # onnxruntime raises its own untyped errors for bad models
            raise ModelLoadError(f"onnxruntime could not load the model: {e}") from e
        self._bytes = model_bytes
        self._options = dict(options)
        self.device = device
        inferred = Schema(
            inputs=[_spec(a) for a in self.session.get_inputs()],
            outputs=[_spec(a) for a in self.session.get_outputs()],
        )
        self.schema = schema or inferred
        # Resolved once: run() passes the same list on every call.
        self._output_names = [t.name for t in inferred.outputs]
        # InferenceSession.run re-validates input names and wraps the C++ call to retry on
        # another execution provider when one fails. Schema.coerce has already validated the
        # inputs, and with the CPU provider alone there is nothing to fall back to, so run()
        # calls the binding directly: ~1.3 us less per call on small models.
        self._inner: Any = getattr(self.session, "_sess", None)
        if self._inner is not None and list(providers) == ["CPUExecutionProvider"]:
            self.run = self._run_direct  # type: ignore[method-assign]
        kind, index = split_device(device)
        self._on_device = output_on_device(options)
        if kind == "cuda" or self._on_device or options.get("io_binding"):
            # Chosen here, not per call: the plain CPU path above stays as it is.
            self._cuda = kind == "cuda"
            self._bind_outputs_at = (kind, index) if self._on_device else ("cpu", 0)
            self._ortvalue = ort.OrtValue
            self.run = self._run_bound  # type: ignore[method-assign]
        # onnxruntime's string tensors take and give str; V2 BYTES are bytes. Convert at the edge,
        # only for models that have string tensors.
        self._string_inputs = [t.name for t in inferred.inputs if t.dtype is DType.BYTES]
        self._string_outputs = [t.name for t in inferred.outputs if t.dtype is DType.BYTES]
        if self._string_inputs or self._string_outputs:
            self._run_numeric = self.run
            self.run = self._run_strings  # type: ignore[method-assign]

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> OnnxBackend:
        _ort()  # BackendUnavailable naming the extra before anything is read or parsed
        if isinstance(source, (str, Path)):
            path = Path(source)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ModelLoadError(f"cannot read ONNX file {path.name!r}: {e.strerror}") from e
            data = self_contained(data, path.parent, path.name)
        elif isinstance(source, (bytes, bytearray)):
            data = self_contained(bytes(source), None, "<bytes>")
        elif hasattr(source, "SerializeToString"):
            # A proto in memory has no directory: a tensor that still names an external file is refused.
            embed_external_data(source, None, listed=None, where="<ModelProto>")
            data = source.SerializeToString()
        else:
            raise ModelLoadError(f"the onnx backend cannot load a {type(source).__name__}")
        return cls(data, device, options or {}, schema)

    @classmethod
    def accepts(cls, source: Any) -> bool:
        return super().accepts(source) or type(source).__name__ == "ModelProto"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._output_names, inputs)
        except Exception as e:  # ORT raises RuntimeError subclasses of its own (Fail, InvalidArgument ...)
            raise PredictionError(f"onnxruntime failed: {e}") from e
        return dict(zip(self._output_names, outs, strict=False))

    def _run_direct(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names
        try:
            outs = self._inner.run(names, inputs, None)
        except Exception as e:  # ORT raises RuntimeError subclasses of its own (Fail, InvalidArgument ...)
            raise PredictionError(f"onnxruntime failed: {e}") from e
        return dict(zip(names, outs, strict=False))

    def _run_strings(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = dict(inputs)
        for name in self._string_inputs:
            feed[name] = _map_objects(feed[name], _as_str, name)
        out = self._run_numeric(feed)
        for name in self._string_outputs:
            out[name] = _map_objects(out[name], _as_bytes, name)
        return out

    def _run_bound(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        # IOBinding: numpy inputs are copied to the device by onnxruntime, DLPack device tensors are
        # bound where they are; outputs are written where _bind_outputs_at says (host for numpy).
        binding = self.session.io_binding()
        try:
            for name, value in inputs.items():
                if type(value) is np.ndarray:
                    binding.bind_cpu_input(name, value)
                else:
                    if self._cuda:
                        synchronize_producer(value)  # ORT reads it on its own stream
                    binding.bind_ortvalue_input(name, self._ortvalue.from_dlpack(value))
            for name in self._output_names:
                binding.bind_output(name, *self._bind_outputs_at)
            self.session.run_with_iobinding(binding)
            outs = binding.get_outputs() if self._on_device else binding.copy_outputs_to_cpu()
        except Exception as e:  # ORT raises RuntimeError subclasses of its own (Fail, InvalidArgument ...)
            raise PredictionError(f"onnxruntime failed: {e}") from e
        return dict(zip(self._output_names, outs, strict=False))

    def derive(self, model_bytes: bytes) -> OnnxBackend:
        """A session for another graph (a fused or quantized version of this one), with this one's
        device, options and schema, so a user's session options reach what is derived from it.

        Example:
            >>> int8 = backend.derive(quantized_bytes)              # doctest: +SKIP
        """
        return OnnxBackend(model_bytes, self.device, self._options, self.schema)

    def limit_threads(self, threads: int) -> OnnxBackend:
        """The same model on a session with ``threads`` intra-op threads (:mod:`aimass.backends.threads`).

        Session options given at load that set ``intra_op_num_threads`` (or an ``ort.SessionOptions``)
        stand: this one is returned.

        Example:
            >>> OnnxBackend.of(Model.load("mlp.onnx")).limit_threads(1)   # doctest: +SKIP
        """
        given = self._options.get("session_options")
        if given is not None and (not isinstance(given, Mapping) or "intra_op_num_threads" in given):
            return self
        session_options = {**(given or {}), "intra_op_num_threads": threads}
        # type(self): a subclass (a backend built on this one) keeps what it adds.
        return type(self)(self._bytes, self.device, {**self._options, "session_options": session_options}, self.schema)

    def to(self, device: str) -> OnnxBackend:
        if device == self.device:
            return self
        return OnnxBackend(
            self._bytes, device, {k: v for k, v in self._options.items() if k != "providers"}, self.schema
        )

    def save(self, directory: Path) -> list[str]:
        (directory / "model.onnx").write_bytes(self._bytes)
        return ["model.onnx"]

    @property
    def model_bytes(self) -> bytes:
        """The serialized ONNX model this session runs."""
        return self._bytes
