"""TensorFlow Lite models (``.tflite`` files, or their bytes) through the LiteRT interpreter.

Runs ``ai_edge_litert.interpreter.Interpreter`` (``tf.lite.Interpreter`` is deprecated). When the
file has signatures (every converter of TF 2.x writes them) one is run by name, so tensors keep
their signature names (``x``, ``output_0``): ``options={"signature": name}``, else
``serving_default``, else the only one. Files without signatures run subgraph 0 with the
tensor names stored in the file. Dynamic dimensions (``shape_signature`` -1) are resized per call.

An interpreter is not thread-safe, so each thread that calls ``run`` gets its own interpreter over
the same model bytes (created on its first call); calls never share buffers. ``options`` may hold
``num_threads`` (per interpreter). CPU only.

Example:
    >>> from aimass import Model
    >>> m = Model.load("mlp.tflite", options={"num_threads": 1})   # doctest: +SKIP
    >>> m.predict(np.zeros((2, 4), np.float32))                     # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["TFLiteBackend", "custom_ops"]


def _interpreter_class() -> Any:
    module = require_framework(
        "ai_edge_litert.interpreter", backend="tflite", extra="tensorflow", package="ai-edge-litert"
    )
    return module.Interpreter


def custom_ops(model_bytes: bytes) -> list[str]:
    """The custom operators a TFLite flatbuffer names (Flex ops are ``Flex<TF op>``), read without an interpreter.

    Example:
        >>> custom_ops(Path("mlp.tflite").read_bytes())   # doctest: +SKIP
        []
    """
    schema = require_framework(
        "ai_edge_litert.schema_py_generated", backend="tflite", extra="tensorflow", package="ai-edge-litert"
    )
    try:
        model = schema.Model.GetRootAsModel(model_bytes, 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        custom = schema.BuiltinOperator.CUSTOM
        # Newer files keep the code in builtin_code; older ones only in deprecated_builtin_code.
        names = {
            (c.CustomCode() or b"").decode("utf-8", "replace")
            for c in codes
            if c is not None and custom in (c.BuiltinCode(), c.DeprecatedBuiltinCode())
        }
    except Exception:  # not a flatbuffer we can walk: the interpreter's verifier gives the real error
        return []
    return sorted(n or "<unnamed>" for n in names)


def _spec(name: str, detail: Mapping[str, Any]) -> TensorSpec:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) != len(detail["shape"]):
        shape = detail["shape"]
    try:
        dtype = DType.from_numpy(detail["dtype"])
    except Exception:  # e.g. int4 or resource tensors
        raise ModelLoadError(f"TFLite tensor {name!r} has type {detail['dtype']}, which aimass does not map") from None
    return TensorSpec(name=name, dtype=dtype, shape=[int(d) for d in shape])


def _same_tensors(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether two detail maps (keyed differently) describe the same tensors of the same subgraph."""
    return sorted((d["index"], d["name"]) for d in a.values()) == sorted((d["index"], d["name"]) for d in b.values())


class _Signature:
    """One interpreter running one signature (or subgraph 0): resize when shapes change, set, invoke, get."""

    def __init__(self, interpreter: Any, signature: str | None) -> None:
        self.interpreter = interpreter
        interpreter.allocate_tensors()
        main_inputs = {d["name"]: d for d in interpreter.get_input_details()}
        main_outputs = {d["name"]: d for d in interpreter.get_output_details()}
        self._runner = None
        if signature is None:
            self.inputs, self.outputs = main_inputs, main_outputs
        else:
            runner = interpreter.get_signature_runner(signature)
            self.inputs = runner.get_input_details()
            self.outputs = runner.get_output_details()
            if not (_same_tensors(self.inputs, main_inputs) and _same_tensors(self.outputs, main_outputs)):
                # Another subgraph than the first: the signature runner resizes and reallocates
                # on every call; the first subgraph takes the cheaper path below (about 3x less
                # time per call on a small MLP).
                self._runner = runner
        # Plain ints: comparing numpy int32 scalars to a shape tuple costs microseconds per call.
        self._shapes = {n: tuple(int(v) for v in d["shape"]) for n, d in self.inputs.items()}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runner is not None:
            return self._runner(**inputs)
        it = self.interpreter
        changed = False
        for name, detail in self.inputs.items():
            shape = inputs[name].shape
            if self._shapes[name] != shape:
                it.resize_tensor_input(detail["index"], shape, strict=True)  # only -1 dimensions may change
                self._shapes[name] = shape
                changed = True
        if changed:
            it.allocate_tensors()
        for name, detail in self.inputs.items():
            it.set_tensor(detail["index"], inputs[name])
        it.invoke()
        return {name: it.get_tensor(detail["index"]) for name, detail in self.outputs.items()}


class TFLiteBackend(Backend):
    """A ``.tflite`` model on the LiteRT interpreter, one interpreter per calling thread."""

    name: ClassVar[str] = "tflite"
    framework: ClassVar[str] = "ai-edge-litert"
    extra: ClassVar[str] = "tensorflow"
    suffixes: ClassVar[tuple[str, ...]] = (".tflite",)

    def __init__(
        self, model_bytes: bytes, schema: Schema | None, options: Mapping[str, Any], shown: str = "the TFLite model"
    ) -> None:
        self._bytes = model_bytes
        self._options = dict(options)
        self._local = threading.local()
        # Select-TF (Flex) ops need TensorFlow's kernels, which the LiteRT interpreter does not
        # link: refuse them by name before any interpreter is created.
        flex = [op for op in custom_ops(model_bytes) if op.startswith("Flex")]
        if flex:
            raise ModelLoadError(
                f"{shown} uses Select TensorFlow (Flex) ops that the LiteRT interpreter does not run: "
                f"{', '.join(flex[:8])}{f' and {len(flex) - 8} more' if len(flex) > 8 else ''}; "
                "convert it with TFLite builtin ops only (the converter's default supported_ops)"
            )
        try:
            runner, self.signature = self._first_runner()
        except RuntimeError as e:  # allocate_tensors: a custom op with no registered kernel, and friends
            custom = custom_ops(model_bytes)
            named = f" (its custom ops: {', '.join(custom[:8])})" if custom else ""
            raise ModelLoadError(f"LiteRT could not prepare {shown}{named}: {str(e)[:300]}") from e
        self._local.runner = runner
        inferred = Schema(
            inputs=[_spec(n, d) for n, d in runner.inputs.items()],
            outputs=[_spec(n, d) for n, d in runner.outputs.items()],
        )
        self.schema = schema or inferred
        self._input_names = self.schema.input_names
        self._output_names = self.schema.output_names

    def _interpreter(self) -> Any:
        num_threads = self._options.get("num_threads")
        try:
            return _interpreter_class()(model_content=self._bytes, num_threads=num_threads)
        except (ValueError, RuntimeError) as e:  # the flatbuffer verifier and the op resolver raise these
            raise ModelLoadError(f"LiteRT could not load the model: {e}") from e

    def _first_runner(self) -> tuple[_Signature, str | None]:
        """The loading thread's runner, and the signature every thread will run (None: subgraph 0)."""
        interpreter = self._interpreter()
        signatures = interpreter.get_signature_list()
        wanted = self._options.get("signature")
        if wanted is not None and wanted not in signatures:
            raise ModelLoadError(f"TFLite model has no signature {wanted!r}; signatures are {sorted(signatures)}")
        if wanted is None and signatures:
            if "serving_default" in signatures:
                wanted = "serving_default"
            elif len(signatures) == 1:
                wanted = next(iter(signatures))
            else:
                raise ModelLoadError(
                    f"TFLite model has signatures {sorted(signatures)} and none is 'serving_default': "
                    "pick one with options={'signature': name}"
                )
        return _Signature(interpreter, wanted), wanted

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> TFLiteBackend:
        if split_device(device)[0] != "cpu":
            raise DeviceError(f"the tflite backend runs on the CPU only; got device {device!r}")
        if isinstance(source, (str, Path)):
            try:
                data = Path(source).read_bytes()
            except OSError as e:
                raise ModelLoadError(f"cannot read TFLite file {Path(source).name!r}: {e.strerror}") from e
            shown = f"TFLite file {Path(source).name!r}"
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            shown = "the TFLite model"
        else:
            raise ModelLoadError(
                f"the tflite backend loads .tflite files or their bytes, not a {type(source).__name__}"
            )
        return cls(data, schema, options or {}, shown)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = _Signature(self._interpreter(), self.signature)
        try:
            outs = runner(inputs)
        except Exception as e:  # LiteRT raises ValueError/RuntimeError for shapes it cannot resize
            raise PredictionError(f"LiteRT failed: {e}") from e
        return {n: outs[n] for n in self._output_names}

    def save(self, directory: Path) -> list[str]:
        (directory / "model.tflite").write_bytes(self._bytes)
        return ["model.tflite"]

    @property
    def model_bytes(self) -> bytes:
        """The TFLite flatbuffer this backend runs."""
        return self._bytes
