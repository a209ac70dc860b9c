"""PyTorch models: an ``nn.Module`` object, a ``torch.export`` program (``.pt2``) or TorchScript.

A module's input shapes cannot be read from the object itself, so an ``nn.Module`` needs either
``schema=`` or ``example_input=`` (outputs are then found by running the example once). Input
names come from ``forward``'s parameters; outputs are named ``output`` (one tensor),
``output_0 ...`` (a tuple) or by key (a dict).

Files: ``.pt2`` is loaded with ``torch.export.load``; ``.pt``/``.pth``/``.ts`` is tried as
TorchScript, and otherwise with ``torch.load(weights_only=True)`` unless the caller passes
``options={"allow_pickle": True}`` (pickle runs arbitrary code: only for files you trust).
Both program formats are checked first (:mod:`aimass.frameworks.torch.programs`): a ``.pt2`` loads
when every operator it names is on ``allowed_ops.txt``, TorchScript only with ``trust_code=True``.
Saving writes a ``torch.export`` program with the dynamic (-1) dimensions kept dynamic (a
TorchScript module is saved as TorchScript, and its package needs trust to load).

Acceleration (``options``): ``autocast="fp16"``/``"bf16"`` runs forward under ``torch.autocast``
(outputs are cast back to the schema's dtypes), ``compile=True`` (or a dict of ``torch.compile``
arguments, e.g. ``{"mode": "max-autotune"}``) compiles the module on first call, and
``output="device"`` returns torch tensors left on the model's device. On CUDA, torch/CuPy CUDA
tensors passed to ``predict`` are used in place (DLPack), with no copy through the host.

Example:
    >>> import torch, numpy as np
    >>> from aimass import Model
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> m = Model.load(net, example_input={"input": np.zeros((2, 4), np.float32)})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import as_torch_tensor, check_device, output_on_device, split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError, SchemaError
from aimass.frameworks.torch.programs import check_torch_file, is_torchscript
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["TorchBackend"]


def _torch() -> Any:
    return require_framework("torch", backend="torch", extra="torch")


def _dtype_of(tensor: Any) -> DType:
    torch = _torch()
    if tensor.dtype == torch.bfloat16:
        return DType.FP32  # numpy has no bfloat16: outputs are widened to float32 in run()
    return DType.from_numpy(tensor.detach().cpu()[:0].numpy().dtype)


def _flatten(out: Any) -> list[tuple[str, Any]]:
    if isinstance(out, Mapping):
        return [(str(k), v) for k, v in out.items()]
    if isinstance(out, (tuple, list)):
        return [(f"output_{i}", v) for i, v in enumerate(out)]
    return [("output", out)]


def _to_numpy(t: Any) -> np.ndarray:
    torch = sys.modules["torch"]  # already imported by whoever made the tensor
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.detach().cpu().numpy()


def _forward_names(module: Any) -> list[str]:
    script_schema = getattr(getattr(module, "forward", None), "schema", None)
    if script_schema is not None:  # TorchScript keeps argument names in its own schema (first is self)
        return [a.name for a in script_schema.arguments[1:]]
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _call_order(module: Any, schema: Schema) -> list[str]:
    """Schema input names in ``forward()``'s parameter order: run() passes them positionally."""
    order = schema.input_names
    names = _forward_names(module)
    if len(order) > 1 and names:
        if any(n not in names for n in order):
            raise SchemaError(
                f"schema inputs {order} do not match forward() parameters {names}: "
                "with several inputs, names must be forward()'s parameter names"
            )
        order = sorted(order, key=names.index)
    return order


class TorchBackend(Backend):
    """A PyTorch callable (``nn.Module``, exported program module or TorchScript) run under inference mode."""

    name: ClassVar[str] = "torch"
    framework: ClassVar[str] = "torch"
    extra: ClassVar[str] = "torch"
    suffixes: ClassVar[tuple[str, ...]] = (".pt2", ".pt", ".pth", ".ts", ".torchscript")
    type_modules: ClassVar[tuple[str, ...]] = ("torch.",)
    device_inputs: ClassVar[bool] = True  # run() takes torch/CuPy CUDA tensors in place (aimass.device)

    def __init__(
        self,
        module: Any,
        schema: Schema,
        device: str,
        example: dict[str, np.ndarray] | None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.schema = schema
        self.device = device
        self._example = example
        self._torch = _torch()
        # The constructor owns the call order, so every path that builds a backend (load, to,
        # update, compress) calls forward() with the same arguments in the same places.
        self._input_names = _call_order(module, schema)
        self._output_names = schema.output_names
        self._torch_device = self._torch.device(device)
        self._cpu = split_device(device)[0] == "cpu"
        self._single_output = self._output_names[0] if len(self._output_names) == 1 else None
        self._options = dict(options or {})
        self._accelerate()

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> TorchBackend:
        torch = _torch()
        options = options or {}
        _check_device(device)
        if isinstance(source, (str, Path)):
            source, file_schema = _load_file(
                Path(source), allow_pickle=bool(options.get("allow_pickle")), trusted=bool(options.get("trust_code"))
            )
            schema = schema or file_schema
        if isinstance(source, torch.export.ExportedProgram):
            schema = schema or _schema_from_exported(source)
            source = source.module()
        if not callable(source):
            raise ModelLoadError(f"the torch backend needs an nn.Module or a callable, got {type(source).__name__}")
        if hasattr(source, "eval"):
            with contextlib.suppress(NotImplementedError):  # exported programs' modules refuse eval()
                source.eval()
        names = _forward_names(source)
        example = None
        if example_input is not None:
            if not isinstance(example_input, Mapping):
                example_input = {(names[0] if names else "input"): example_input}
            example = {k: _example_array(v) for k, v in example_input.items()}
        if schema is None:
            if example is None:
                raise ModelLoadError(
                    "a torch module does not record its input shapes: pass example_input={name: array} "
                    "or schema=Schema(...) to Model.load"
                )
            schema = Schema(
                inputs=[
                    TensorSpec(name=k, dtype=DType.from_numpy(v.dtype), shape=[-1, *v.shape[1:]])
                    for k, v in example.items()
                ]
            )
        module = source.to(device) if hasattr(source, "to") and split_device(device)[0] != "cpu" else source
        backend = cls(module, schema, device, example, options)
        if not schema.outputs:
            backend.schema = schema.model_copy(update={"outputs": backend._infer_outputs()})
            backend._output_names = backend.schema.output_names
            backend._single_output = backend._output_names[0] if len(backend._output_names) == 1 else None
        return backend

    def _infer_outputs(self) -> list[TensorSpec]:
        sample = self._example or self.schema.example()
        batch = next(iter(sample.values())).shape[0] if sample and next(iter(sample.values())).ndim else None
        with self._torch.inference_mode():
            out = self.module(*self._tensors(sample))
        specs = []
        for name, t in _flatten(out):
            shape = list(t.shape)
            if shape and batch is not None and shape[0] == batch and self.schema.inputs[0].shape[:1] == [-1]:
                shape[0] = -1
            specs.append(TensorSpec(name=name, dtype=_dtype_of(t), shape=shape))
        return specs

    # -- running -----------------------------------------------------------------------------

    def _tensors(self, inputs: Mapping[str, np.ndarray]) -> list[Any]:
        # torch.from_numpy warns on read-only buffers (e.g. decoded requests): copy those.
        from_numpy = self._torch.from_numpy
        tensors = [from_numpy(a if a.flags.writeable else a.copy()) for a in map(inputs.__getitem__, self._input_names)]
        if not self._cpu:
            return [t.to(self._torch_device, non_blocking=True) for t in tensors]
        return tensors

    def limit_threads(self, threads: int) -> TorchBackend:
        """This backend, with torch's intra-op threads set to ``threads`` (:mod:`aimass.backends.threads`).

        torch keeps one such setting per process (``torch.set_num_threads``): every torch model of the
        process gets it.

        Example:
            >>> TorchBackend.of(model).limit_threads(1)   # doctest: +SKIP
        """
        self._torch.set_num_threads(threads)
        return self

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self.module(*self._tensors(inputs))
        except Exception as e:  # a user's forward() can raise anything
            raise PredictionError(f"torch forward failed: {type(e).__name__}: {e}") from e
        if type(out) is torch.Tensor and self._single_output is not None:
            if self._cpu:
                try:
                    return {self._single_output: out.numpy()}
                except TypeError:  # bfloat16 and other types numpy lacks
                    pass
            return {self._single_output: _to_numpy(out)}
        flat = _flatten(out)
        return {name: _to_numpy(t) for name, t in zip(self._output_names, (t for _, t in flat), strict=True)}

    def to(self, device: str) -> TorchBackend:
        _check_device(device)
        if device == self.device:
            return self
        # nn.Module.to moves in place: copy, or the original Model would find its module moved.
        return TorchBackend(copy.deepcopy(self.module).to(device), self.schema, device, self._example, self._options)

    # -- acceleration ------------------------------------------------------------------------

    def _accelerate(self) -> None:
        """Choose run() once: the plain CPU method, or the general one (device I/O, autocast, compile)."""
        torch, opts = self._torch, self._options
        amp = opts.get("autocast")
        amp_types = {
            "fp16": torch.float16,
            "float16": torch.float16,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
        }
        if amp and amp not in amp_types:
            raise ModelLoadError(f"option autocast={amp!r}: use 'fp16' or 'bf16'")
        self._amp = amp_types[amp] if amp else None
        self._on_device = output_on_device(opts)
        compile_args = opts.get("compile")
        self._forward = self.module
        if compile_args:
            self._forward = torch.compile(self.module, **({} if compile_args is True else dict(compile_args)))
        self._out_dtypes: list[Any] | None = None
        if not self._cpu or self._amp is not None or compile_args or self._on_device:
            self.run = self._run_general  # type: ignore[method-assign]

    def _as_tensor(self, value: Any) -> Any:
        t = as_torch_tensor(self._torch, value)
        return t if t.device == self._torch_device else t.to(self._torch_device, non_blocking=True)

    def _run_general(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        args = [self._as_tensor(inputs[n]) for n in self._input_names]
        amp = (
            torch.autocast(self._torch_device.type, dtype=self._amp)
            if self._amp is not None
            else contextlib.nullcontext()
        )
        try:
            with torch.inference_mode(), amp:
                out = self._forward(*args)
        except Exception as e:  # a user's forward() can raise anything
            raise PredictionError(f"torch forward failed: {type(e).__name__}: {e}") from e
        tensors = [out] if isinstance(out, torch.Tensor) else [t for _, t in _flatten(out)]
        if self._out_dtypes is None:  # the schema's outputs are final only after load() inferred them
            self._out_dtypes = [getattr(torch, s.dtype.numpy.name, None) for s in self.schema.outputs]
        result: dict[str, Any] = {}
        for name, t, want in zip(self._output_names, tensors, self._out_dtypes, strict=True):
            if want is not None and t.dtype != want and t.is_floating_point():
                t = t.to(want)  # autocast outputs (fp16/bf16) back to the declared dtype
            result[name] = t if self._on_device else _to_numpy(t)
        return result

    # -- saving ------------------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        torch = self._torch
        if isinstance(self.module, torch.jit.ScriptModule):
            warnings.warn(
                "a TorchScript module is saved as TorchScript (model.ts), a program that cannot be inspected "
                "without running it: loading this package will need trust_code=True",
                UserWarning,
                stacklevel=2,
            )
            torch.jit.save(self.module, str(directory / "model.ts"))
            return ["model.ts"]
        sample = self._example or self.schema.example()
        args = tuple(self._tensors(sample))
        dynamic = tuple(
            {i: torch.export.Dim.AUTO for i, d in enumerate(t.shape) if d == -1} or None for t in self.schema.inputs
        )
        try:
            program = torch.export.export(self.module, args, dynamic_shapes=dynamic)
        except Exception as e:  # export failures come from many torch subsystems
            raise ModelLoadError(
                f"torch.export could not capture this module for saving ({type(e).__name__}: {e}); "
                "script it with torch.jit.script and wrap that instead"
            ) from e
        torch.export.save(program, str(directory / "model.pt2"))
        return ["model.pt2"]


def _example_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return _to_numpy(value)
    return np.asarray(value)


def _check_device(device: str) -> None:
    # The driver-level check every backend shares, then what only torch can tell: whether this
    # build of torch can use the GPUs the driver shows (a CPU-only wheel cannot).
    kind, index = check_device(device)
    if kind == "cuda":
        torch = _torch()
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r}: torch {torch.__version__} sees {torch.cuda.device_count()} CUDA device(s) "
                "(a CPU-only torch build sees none: install a CUDA build of torch)"
            )


def _load_file(path: Path, *, allow_pickle: bool, trusted: bool) -> tuple[Any, Schema | None]:
    torch = _torch()
    if not path.exists():
        raise ModelLoadError(f"no such file: {path.name!r}")
    # Before any torch call reads the file: .pt2 graphs and TorchScript are programs.
    check_torch_file(path, trusted=trusted)
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)), None
        if is_torchscript(path):
            return torch.jit.load(str(path), map_location="cpu"), None
        obj = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # torch's unpickler raises UnpicklingError/RuntimeError/AttributeError ...
        if not allow_pickle and "weights_only" in str(e):
            raise ModelLoadError(
                f"{path.name!r} is a pickled object, refused without options={{'allow_pickle': True}} "
                "(unpickling runs code from the file: only for files you trust)"
            ) from e
        raise ModelLoadError(f"torch could not load {path.name!r}: {e}") from e
    if isinstance(obj, Mapping):
        raise ModelLoadError(
            f"{path.name!r} holds a state_dict (weights without architecture): build the module, "
            "call load_state_dict, and pass the module to Model.load"
        )
    return obj, None


def _schema_from_exported(program: Any) -> Schema:
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            shape = [d if isinstance(d, int) else -1 for d in val.shape]
            inputs.append(TensorSpec(name=node.name, dtype=_dtype_of_fake(val), shape=shape))
    outputs = []
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    vals = [a.meta.get("val") for a in out_node.args[0]]
    names = ["output"] if len(vals) == 1 else [f"output_{i}" for i in range(len(vals))]
    for name, val in zip(names, vals, strict=True):
        shape = [d if isinstance(d, int) else -1 for d in val.shape]
        outputs.append(TensorSpec(name=name, dtype=_dtype_of_fake(val), shape=shape))
    return Schema(inputs=inputs, outputs=outputs)


def _dtype_of_fake(val: Any) -> DType:
    torch = _torch()
    if val.dtype == torch.bfloat16:
        return DType.FP32
    return DType.from_numpy(torch.empty(0, dtype=val.dtype).numpy().dtype)
