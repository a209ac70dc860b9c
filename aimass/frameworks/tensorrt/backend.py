"""TensorRT engines: a serialized ``.engine``/``.plan`` file, or one built from an ONNX file.

Written against the TensorRT 10 Python API: engines are deserialized with ``trt.Runtime``, run
with ``IExecutionContext.execute_async_v3`` on a CUDA stream after ``set_input_shape`` and
``set_tensor_address`` for every I/O tensor. Device buffers are torch CUDA tensors, so DLPack
inputs (torch, CuPy) are used in place and ``output="device"`` returns torch CUDA tensors. The
schema is read from the engine's I/O tensors (``-1`` where the engine takes a range).

Building from ONNX (``Model.load("m.onnx", backend="tensorrt", device="cuda", options=...)``)
parses the file with ``trt.OnnxParser`` and builds with these ``options``:

* ``fp16`` / ``int8`` (bool): builder precision flags. ``int8`` needs an ONNX model with
  QuantizeLinear/DequantizeLinear nodes (explicit quantization, e.g. from onnxruntime's
  ``quantize_static(..., quant_format=QuantFormat.QDQ)``): TensorRT 10 deprecates calibrators.
* ``batch=(min, opt, max)``: the optimisation profile of a dynamic first (batch) axis,
  default ``(1, 64, 256)``; ``shapes={"ids": ((1, 8), (16, 128), (256, 512)), ...}`` gives full
  min/opt/max shapes for inputs with other dynamic axes (sequence length ...).
* ``workspace``: the builder's workspace pool limit in bytes.
* ``cache`` (default ``True``): the built engine is written next to the ONNX file, named after it
  with the GPU name, the TensorRT version and a digest of the model and the build options
  (``mlp.NVIDIA-H100-80GB-HBM3.trt10.9.0.34.3f9a0c1b2d4e.engine``), and reused while all match.

The backend runs on CUDA only: the default ``device="cpu"`` of ``Model.load`` means ``cuda:0``
here, and ``to("cpu")`` raises :class:`~aimass.errors.DeviceError`. One execution context serves
calls one at a time (contexts are not thread-safe).

Example:
    >>> from aimass import Model
    >>> m = Model.load("mlp.onnx", backend="tensorrt", device="cuda", options={"fp16": True})  # doctest: +SKIP
    >>> m = Model.load("mlp.engine")                                                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import as_torch_tensor, check_device, output_on_device, split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError, SchemaError
from aimass.onnx_external_data import self_contained
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["BuildOptions", "TensorRTBackend", "engine_cache_path", "profile_shapes", "tensor_dtype"]

# trt.DataType member names -> V2 types. BF16, FP8, INT4 and FP4 I/O have no numpy/V2 type.
_TRT_TYPES: dict[str, DType] = {
    "FLOAT": DType.FP32,
    "HALF": DType.FP16,
    "INT8": DType.INT8,
    "INT32": DType.INT32,
    "INT64": DType.INT64,
    "BOOL": DType.BOOL,
    "UINT8": DType.UINT8,
}

Shape = tuple[int, ...]


def _trt() -> Any:
    return require_framework("tensorrt", backend="tensorrt", extra="tensorrt")


def _torch() -> Any:
    # Device buffers and the CUDA stream are torch's: the one GPU array library every user has.
    return require_framework("torch", backend="tensorrt", extra="tensorrt")


@functools.cache
def _logger() -> Any:
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)  # TensorRT wants one logger per process
    trt.init_libnvinfer_plugins(logger, namespace="")  # ONNX ops and engines that use TensorRT's plugins
    return logger


def tensor_dtype(trt_type_name: str, tensor: str) -> DType:
    """The V2 type of a TensorRT I/O tensor from its ``trt.DataType`` name (``"FLOAT"`` -> FP32).

    Example:
        >>> tensor_dtype("HALF", "x")
        <DType.FP16: 'FP16'>
    """
    try:
        return _TRT_TYPES[trt_type_name]
    except KeyError:
        raise ModelLoadError(
            f"TensorRT tensor {tensor!r} has type {trt_type_name}, which has no V2/numpy type; "
            f"aimass maps {sorted(_TRT_TYPES)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How an engine is built from ONNX; part of the engine cache key.

    Example:
        >>> BuildOptions.parse({"fp16": True, "batch": (1, 8, 32)}).batch
        (1, 8, 32)
    """

    fp16: bool = False
    int8: bool = False
    batch: Shape = (1, 64, 256)
    shapes: tuple[tuple[str, tuple[Shape, Shape, Shape]], ...] = ()
    workspace: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> BuildOptions:
        """Validate the build keys of ``options`` (other keys are left to the backend)."""
        try:
            batch = tuple(int(b) for b in options.get("batch", cls.batch))
        except (TypeError, ValueError):
            batch = ()
        if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
            raise ModelLoadError(
                f"option batch={options.get('batch')!r}: want (min, opt, max) with 1 <= min <= opt <= max"
            )
        shapes = []
        for name, triple in sorted(dict(options.get("shapes") or {}).items()):
            try:
                low, opt, high = (tuple(int(d) for d in s) for s in triple)
            except (TypeError, ValueError):
                raise ModelLoadError(f"option shapes[{name!r}]: want (min_shape, opt_shape, max_shape)") from None
            if not len(low) == len(opt) == len(high) or any(
                not 1 <= a <= b <= c for a, b, c in zip(low, opt, high, strict=True)
            ):
                raise ModelLoadError(
                    f"option shapes[{name!r}] = {triple!r}: min, opt, max must have one rank and min <= opt <= max"
                )
            shapes.append((str(name), (low, opt, high)))
        workspace = options.get("workspace")
        return cls(
            fp16=bool(options.get("fp16", False)),
            int8=bool(options.get("int8", False)),
            batch=batch,
            shapes=tuple(shapes),
            workspace=int(workspace) if workspace is not None else None,
        )

    def key(self) -> str:
        """Stable text of these options (hashed into the cache file name)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def profile_shapes(name: str, shape: Sequence[int], build: BuildOptions) -> tuple[Shape, Shape, Shape]:
    """Min/opt/max shapes of one network input for the optimisation profile.

    An explicit ``shapes`` entry wins; otherwise only a dynamic first axis is allowed, and it
    takes ``batch``.

    Example:
        >>> profile_shapes("x", [-1, 4], BuildOptions(batch=(1, 8, 32)))
        ((1, 4), (8, 4), (32, 4))
    """
    given = dict(build.shapes).get(name)
    if given is not None:
        for s in given:
            if len(s) != len(shape) or any(d != -1 and d != g for d, g in zip(shape, s, strict=True)):
                raise ModelLoadError(
                    f"option shapes[{name!r}] = {list(given)} does not fit input {name!r} of shape {list(shape)}"
                )
        return given
    if any(d == -1 for d in shape[1:]):
        raise ModelLoadError(
            f"input {name!r} has shape {list(shape)}: dynamic axes other than the first need "
            f"options={{'shapes': {{{name!r}: (min_shape, opt_shape, max_shape)}}}}"
        )
    rest = tuple(int(d) for d in shape[1:])
    if not shape or shape[0] != -1:
        fixed = tuple(int(d) for d in shape)
        return fixed, fixed, fixed
    low, opt, high = build.batch
    return (low, *rest), (opt, *rest), (high, *rest)


def engine_cache_path(onnx_path: Path, onnx_bytes: bytes, gpu_name: str, trt_version: str, build: BuildOptions) -> Path:
    """Where the engine built from ``onnx_path`` for this GPU, TensorRT version and options is cached.

    Next to the ONNX file; readable parts (GPU, TensorRT version) and a digest of everything that
    changes the engine (model bytes, GPU, version, build options).

    Example:
        >>> engine_cache_path(Path("m/mlp.onnx"), b"...", "NVIDIA H100", "10.9.0", BuildOptions()).parent
        PosixPath('m')
    """
    digest = hashlib.sha256()
    for part in (onnx_bytes, gpu_name.encode(), trt_version.encode(), build.key().encode()):
        digest.update(hashlib.sha256(part).digest())
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-") or "gpu"
    version = re.sub(r"[^0-9A-Za-z.]+", "-", trt_version)
    return onnx_path.with_name(f"{onnx_path.stem}.{gpu}.trt{version}.{digest.hexdigest()[:12]}.engine")


def build_engine(onnx_path: Path, build: BuildOptions, device_index: int, onnx_bytes: bytes | None = None) -> bytes:
    """Parse an ONNX model and build a serialized TensorRT engine (minutes for large models).

    ``onnx_bytes`` is the file's content with its external data checked and embedded
    (:func:`aimass.onnx_external_data.self_contained`), read from ``onnx_path`` when not given.
    """
    if onnx_bytes is None:  # checked before TensorRT is even imported
        onnx_bytes = self_contained(onnx_path.read_bytes(), onnx_path.parent, onnx_path.name)
    trt, torch = _trt(), _torch()
    logger = _logger()
    with torch.cuda.device(device_index):
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        # From checked bytes, not parse_from_file: the parser would read any external data file the
        # model names, wherever it points.
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelLoadError(f"TensorRT could not parse {onnx_path.name!r}: {errors}")
        config = builder.create_builder_config()
        if build.workspace is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace)
        if build.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if build.int8:
            layers = (network.get_layer(i).type for i in range(network.num_layers))
            if trt.LayerType.QUANTIZE not in set(layers):
                raise ModelLoadError(
                    f"int8=True needs QuantizeLinear/DequantizeLinear nodes in {onnx_path.name!r} (explicit "
                    "quantization, e.g. onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ))"
                )
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        dynamic = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = [int(d) for d in tensor.shape]
            if -1 in shape or tensor.name in dict(build.shapes):
                low, opt, high = profile_shapes(tensor.name, shape, build)
                profile.set_shape(tensor.name, low, opt, high)
                dynamic = True
        if dynamic:
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT could not build an engine from {onnx_path.name!r} (see TensorRT's log)")
    return bytes(serialized)


def _cached_build(onnx_path: Path, build: BuildOptions, device_index: int, cache: bool) -> tuple[bytes, Path | None]:
    trt, torch = _trt(), _torch()
    try:
        onnx_bytes = onnx_path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read ONNX file {onnx_path.name!r}: {e.strerror}") from e
    onnx_bytes = self_contained(onnx_bytes, onnx_path.parent, onnx_path.name)
    target = engine_cache_path(onnx_path, onnx_bytes, torch.cuda.get_device_name(device_index), trt.__version__, build)
    if cache and target.is_file():
        return target.read_bytes(), target
    data = build_engine(onnx_path, build, device_index, onnx_bytes)
    if cache:
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:  # atomic: a concurrent reader sees no engine or a whole one
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            warnings.warn(f"TensorRT engine not cached next to {onnx_path.name!r}: {e}", stacklevel=3)
    return data, None


class TensorRTBackend(Backend):
    """A deserialized TensorRT engine and one execution context, run on its own CUDA stream."""

    name: ClassVar[str] = "tensorrt"
    framework: ClassVar[str] = "tensorrt"
    extra: ClassVar[str] = "tensorrt"
    suffixes: ClassVar[tuple[str, ...]] = (".engine", ".plan")
    type_modules: ClassVar[tuple[str, ...]] = ("tensorrt.", "tensorrt_bindings.")
    device_inputs: ClassVar[bool] = True  # run() takes torch/CuPy CUDA tensors in place (aimass.device)

    def __init__(self, engine_bytes: bytes, device: str, options: Mapping[str, Any], schema: Schema | None) -> None:
        trt, torch = _trt(), _torch()
        kind, index = check_device(device)
        if kind != "cuda":
            raise DeviceError(f"the tensorrt backend runs on CUDA devices only; got device {device!r}")
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r}: torch here cannot use CUDA (a CPU build?); TensorRT buffers are torch's"
            )
        self._torch = torch
        self._dev = torch.device("cuda", index)
        with torch.cuda.device(index):
            self._runtime = trt.Runtime(_logger())  # kept: the engine must not outlive its runtime
            engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if engine is None:
                raise ModelLoadError(
                    "TensorRT could not deserialize the engine: built by another TensorRT version "
                    f"({trt.__version__} here) or for another GPU? (see TensorRT's log)"
                )
            self._context = engine.create_execution_context()
            self._stream = torch.cuda.Stream(device=self._dev)
        self.engine = engine
        self.device = f"cuda:{index}"
        self._bytes = engine_bytes
        self._options = dict(options)
        self._on_device = output_on_device(options)
        inferred = _engine_schema(engine, trt)
        self.schema = schema or inferred
        self._inputs = [(t.name, getattr(torch, t.dtype.numpy.name)) for t in inferred.inputs]
        self._outputs = [(t.name, getattr(torch, t.dtype.numpy.name)) for t in inferred.outputs]
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> TensorRTBackend:
        _trt()  # BackendUnavailable naming the extra before anything else
        options = dict(options or {})
        _, index = split_device(device)
        device = f"cuda:{index}"  # "cpu" (Model.load's default) means the first GPU here
        check_device(device)
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.suffix.lower() == ".onnx":
                build = BuildOptions.parse(options)
                data, cached = _cached_build(path, build, index, cache=bool(options.get("cache", True)))
                try:
                    return cls(data, device, options, schema)
                except ModelLoadError:
                    if cached is None:
                        raise
                    cached.unlink(missing_ok=True)  # a stale cache entry: build once more
                    data, _ = _cached_build(path, build, index, cache=True)
                    return cls(data, device, options, schema)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ModelLoadError(f"cannot read TensorRT engine {path.name!r}: {e.strerror}") from e
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        elif hasattr(source, "serialize") and hasattr(source, "num_io_tensors"):  # a trt.ICudaEngine
            data = bytes(source.serialize())
        else:
            raise ModelLoadError(f"the tensorrt backend cannot load a {type(source).__name__}")
        return cls(data, device, options, schema)

    # -- running -----------------------------------------------------------------------------

    def _device_tensor(self, value: Any) -> Any:
        return as_torch_tensor(self._torch, value).to(self._dev, non_blocking=True).contiguous()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        torch, ctx, stream = self._torch, self._context, self._stream
        with self._lock, torch.cuda.device(self._dev):
            caller = torch.cuda.current_stream(self._dev)
            stream.wait_stream(caller)  # device inputs may still be being written on the caller's stream
            with torch.cuda.stream(stream):
                held = []
                for name, dtype in self._inputs:
                    t = self._device_tensor(inputs[name])
                    if t.dtype != dtype:
                        t = t.to(dtype)
                    if not ctx.set_input_shape(name, tuple(t.shape)):
                        raise SchemaError(self._outside_profile(name, tuple(t.shape)), tensor=name)
                    ctx.set_tensor_address(name, t.data_ptr())
                    held.append(t)
                outs: dict[str, Any] = {}
                for name, dtype in self._outputs:
                    shape = tuple(ctx.get_tensor_shape(name))
                    if any(d < 0 for d in shape):
                        raise PredictionError(
                            f"output {name!r} has a data-dependent shape {list(shape)}; aimass's TensorRT backend "
                            "needs output shapes that follow from the input shapes"
                        )
                    out = torch.empty(shape, dtype=dtype, device=self._dev)
                    ctx.set_tensor_address(name, out.data_ptr())
                    outs[name] = out
                if not ctx.execute_async_v3(stream.cuda_stream):
                    raise PredictionError("TensorRT execute_async_v3 failed (see TensorRT's log)")
                if not self._on_device:
                    # .cpu() copies on this stream and waits for it: inputs and outputs are done with.
                    return {name: out.cpu().numpy() for name, out in outs.items()}
                caller.wait_stream(stream)
                for t in held:
                    t.record_stream(stream)  # the caller's tensors must outlive the queued work
                for out in outs.values():
                    out.record_stream(caller)
                return outs

    def _outside_profile(self, name: str, shape: tuple[int, ...]) -> str:
        low, _, high = (list(s) for s in self.engine.get_tensor_profile_shape(name, 0))
        return (
            f"input {name!r}: shape {list(shape)} is outside the engine's optimisation profile "
            f"(min {low}, max {high}); rebuild with options={{'batch': (min, opt, max)}} to change it"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def to(self, device: str) -> TensorRTBackend:
        kind, _ = split_device(device)
        if kind != "cuda":
            raise DeviceError(f"the tensorrt backend runs on CUDA devices only; got device {device!r}")
        if device == self.device or (device == "cuda" and self.device == "cuda:0"):
            return self
        return TensorRTBackend(self._bytes, device, self._options, self.schema)

    def save(self, directory: Path) -> list[str]:
        (directory / "model.engine").write_bytes(self._bytes)
        return ["model.engine"]

    @property
    def engine_bytes(self) -> bytes:
        """The serialized engine (valid for this GPU model and TensorRT version only)."""
        return self._bytes


def _engine_schema(engine: Any, trt: Any) -> Schema:
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.is_shape_inference_io(name):
            raise ModelLoadError(f"TensorRT tensor {name!r} is a shape tensor, which aimass does not support")
        shape = [int(d) if int(d) >= 0 else -1 for d in engine.get_tensor_shape(name)]
        spec = TensorSpec(name=name, dtype=tensor_dtype(engine.get_tensor_dtype(name).name, name), shape=shape)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return Schema(inputs=inputs, outputs=outputs)
