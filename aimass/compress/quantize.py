"""Quantization and reduced-precision casting, one function per backend.

* onnx: dynamic int8 (``int8``) and static int8 with calibration (``int8-static``) through
  ``onnxruntime.quantization``; fp16 through ``onnxconverter_common`` (inputs/outputs stay FP32).
  Dynamic int8 measures drift and chooses: per-channel weights first, then per-tensor or skipping
  the first and last MatMul/Gemm, keeping the first recipe whose cosine reaches ``min_cosine``.
* torch: ``int8`` is torchao's int8 dynamic-activation / int8-weight on every ``nn.Linear``;
  ``fp16`` / ``bf16`` cast the weights and wrap the module so that it still takes and returns FP32.
* tensorflow/keras: ``int8`` / ``fp16`` through the TFLite converter; the result runs on the
  tflite backend.
* xgboost: trees have no numeric quantization; the error says to convert to ONNX instead.

Every function returns a :class:`Quantized`: the new Model plus the settings chosen and notes.

Example:
    >>> q = compress(m, "int8", data=rows)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.compress.report import compare_outputs, sample_inputs
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["QUANTIZE_METHODS", "Quantized", "quantize"]

QUANTIZE_METHODS = ("int8", "int8-static", "fp16", "bf16")


@dataclasses.dataclass
class Quantized:
    """A compressed model and what was chosen on the way."""

    model: Model
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def quantize(model: Model, method: str, *, data: Any = None, **options: Any) -> Quantized:
    """Quantize ``model`` with ``method`` (one of :data:`QUANTIZE_METHODS`) on its own backend's tools."""
    backend = model.backend_name
    if backend == "onnx":
        if method == "int8":
            return _onnx_dynamic(model, data, **options)
        if method == "int8-static":
            return _onnx_static(model, data, **options)
        if method == "fp16":
            return _onnx_fp16(model, **options)
    elif backend == "torch":
        if method == "int8":
            return _torch_int8(model, **options)
        if method in ("fp16", "bf16"):
            return _torch_cast(model, method, **options)
    elif backend in ("tensorflow", "keras"):
        if method in ("int8", "fp16"):
            from aimass.frameworks.keras.export_tflite import keras_to_tflite_quantized

            return keras_to_tflite_quantized(model, method, data=data, **options)
    elif backend == "xgboost":
        raise UnsupportedOperation(
            "xgboost trees have no numeric quantization (their thresholds are exact float splits); "
            "convert to ONNX instead with m.convert('onnx'), which is usually faster to serve"
        )
    supported = {"onnx": "int8, int8-static, fp16", "torch": "int8, fp16, bf16", "keras/tensorflow": "int8, fp16"}
    raise UnsupportedOperation(
        f"quantization {method!r} is not available for the {backend} backend; supported: "
        + "; ".join(f"{b}: {m}" for b, m in supported.items())
    )


# -- onnx --------------------------------------------------------------------------------------------


def _ort_quant() -> Any:
    return require("onnxruntime.quantization", feature="the onnx backend", extra="onnx", package="onnxruntime")


def _onnx_proto(model: Model) -> Any:
    onnx = require("onnx", feature="the onnx backend", extra="onnx")
    return onnx.load_model_from_string(model.backend.model_bytes)  # type: ignore[attr-defined]


def _weight_nodes(proto: Any) -> list[str]:
    """Names of MatMul/Gemm nodes whose second input is a constant weight, in graph order."""
    inits = {i.name for i in proto.graph.initializer}
    return [
        n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
    ]


def _named(proto: Any) -> Any:
    # onnxruntime's nodes_to_exclude works by node name; exporters sometimes leave names empty.
    used = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return proto


def _preprocessed(proto: Any, notes: list[str]) -> Any:
    """onnxruntime's recommended pre-pass (shape inference + graph optimization), or ``proto`` if it fails."""
    oq = _ort_quant()
    onnx = require("onnx", feature="the onnx backend", extra="onnx")
    try:
        with tempfile.TemporaryDirectory(prefix="aimass-prep-") as tmp:
            out = Path(tmp) / "prep.onnx"
            oq.quant_pre_process(proto, out, auto_merge=True)
            return _named(onnx.load(str(out)))
    except Exception as e:  # symbolic shape inference gives up on some exported graphs
        notes.append(f"onnxruntime pre-processing skipped ({type(e).__name__}: {str(e)[:120]})")
        return proto


def _load_onnx_bytes(data: bytes, like: Model) -> Model:
    from aimass.model import Model

    return Model.load(data, backend="onnx", schema=like.schema, name=like.name)


def _run_quantizer(fn: Any, proto: Any, **kwargs: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="aimass-quant-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        fn(proto, out, **kwargs)
        return out.read_bytes()


def _onnx_dynamic(
    model: Model,
    data: Any,
    *,
    per_channel: bool | None = None,
    min_cosine: float = 0.99,
    exclude: list[str] | None = None,
    **unknown: Any,
) -> Quantized:
    _no_unknown(unknown)
    oq = _ort_quant()
    notes: list[str] = []
    proto = _preprocessed(_named(_onnx_proto(model)), notes)
    inputs, _ = sample_inputs(model, data)
    ref = model.predict(inputs)
    nodes = _weight_nodes(proto)
    if not nodes:
        raise UnsupportedOperation("this ONNX graph has no MatMul/Gemm with constant weights: nothing to quantize")
    # Recipes in order of preference; the first whose drift is within min_cosine wins.
    channels = [per_channel] if per_channel is not None else [True, False]
    recipes: list[tuple[bool, list[str]]] = [(pc, list(exclude or [])) for pc in channels]
    if exclude is None and len(nodes) > 2:
        recipes += [(pc, [nodes[0], nodes[-1]]) for pc in channels]
    tried: list[str] = []
    best: tuple[float, bytes, bool, list[str]] | None = None
    for pc, skip in recipes:
        blob = _run_quantizer(
            oq.quantize_dynamic,
            copy.deepcopy(proto),
            weight_type=oq.QuantType.QInt8,
            per_channel=pc,
            nodes_to_exclude=skip or None,
        )
        candidate = _load_onnx_bytes(blob, model)
        cos = _worst_cosine(compare_outputs(ref, candidate.predict(inputs)))
        tried.append(f"per_channel={pc}, skipped {len(skip)} layer(s): cosine {cos:.5f}")
        if best is None or cos > best[0]:
            best = (cos, blob, pc, skip)
        if cos >= min_cosine:
            break
    assert best is not None
    cos, blob, pc, skip = best
    notes += [f"tried {t}" for t in tried]
    if cos < min_cosine:
        notes.append(f"no recipe reached cosine {min_cosine}; kept the closest")
    settings = {"per_channel": pc, "weight_type": "int8", "layers_quantized": f"{len(nodes) - len(skip)}/{len(nodes)}"}
    if skip:
        settings["skipped"] = skip
    return Quantized(_load_onnx_bytes(blob, model), settings, notes)


def _worst_cosine(drifts: list[Any]) -> float:
    values = [d.cosine for d in drifts if d.cosine is not None]
    return min(values) if values else 1.0


def _onnx_static(
    model: Model, data: Any, *, per_channel: bool = True, calibration_rows: int = 256, **unknown: Any
) -> Quantized:
    _no_unknown(unknown)
    if data is None:
        raise ValueError("int8-static needs calibration samples: pass data= with representative inputs")
    oq = _ort_quant()
    inputs = model.schema.coerce(data)
    n = next(iter(inputs.values())).shape[0]
    rows = min(n, calibration_rows)

    class Reader(oq.CalibrationDataReader):  # type: ignore[name-defined]
        """Feeds the caller's rows one at a time (ranges are collected per activation)."""

        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {k: v[i : i + 1] for k, v in inputs.items()} for i in range(rows)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    notes: list[str] = []
    blob = _run_quantizer(
        oq.quantize_static,
        _preprocessed(_named(_onnx_proto(model)), notes),
        calibration_data_reader=Reader(),
        quant_format=oq.QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=oq.QuantType.QInt8,
        weight_type=oq.QuantType.QInt8,
        extra_options={"ActivationSymmetric": True},
    )
    settings = {"format": "QDQ", "per_channel": per_channel, "calibration_rows": rows, "calibration": "minmax"}
    return Quantized(_load_onnx_bytes(blob, model), settings, notes)


def _onnx_fp16(model: Model, **unknown: Any) -> Quantized:
    _no_unknown(unknown)
    f16 = require(
        "onnxconverter_common.float16",
        feature="compression and conversion",
        extra="compress",
        package="onnxconverter-common",
    )
    converted = f16.convert_float_to_float16(_onnx_proto(model), keep_io_types=True)
    settings = {"weights": "fp16", "io_types": "kept (FP32)"}
    return Quantized(_load_onnx_bytes(converted.SerializeToString(), model), settings)


# -- torch -------------------------------------------------------------------------------------------


def _torch() -> Any:
    return require("torch", feature="the torch backend", extra="torch")


def _module_copy(model: Model) -> Any:
    torch = _torch()
    module = getattr(model.backend, "module", None)
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise UnsupportedOperation(
            f"torch compression needs an nn.Module (got {type(module).__name__}); "
            "wrap the original nn.Module with Model.load(module, example_input=...)"
        )
    return copy.deepcopy(module).eval()


def _torch_model(module: Any, like: Model) -> Model:
    from aimass.model import Model

    return Model.load(module, schema=like.schema, name=like.name)


def _torch_int8(model: Model, **unknown: Any) -> Quantized:
    _no_unknown(unknown)
    torch = _torch()
    module = _module_copy(model)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise UnsupportedOperation("this torch module has no nn.Linear layers: int8 has nothing to quantize")
    tq = require("torchao.quantization", feature="compression and conversion", extra="compress", package="torchao")
    tq.quantize_(module, tq.Int8DynamicActivationInt8WeightConfig())
    settings = {"scheme": "torchao int8 dynamic activation / int8 weight", "linear_layers": len(linears)}
    notes = [
        "torchao's int8 kernels are fast on CPU only after torch.compile; eager latency is shown here",
    ]
    return Quantized(_torch_model(module, model), settings, notes)


def _cast_inputs(dtype: Any, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.to(dtype) if a.is_floating_point() else a for a in args)


def _float32_outputs(module: Any, args: Any, out: Any) -> Any:
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _float32_outputs(module, args, v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_float32_outputs(module, args, v) for v in out)
    return out


def cast_module(module: Any, dtype: Any) -> Any:
    """``module`` in ``dtype``, still taking and returning float32 (hooks cast at the edges).

    Hooks rather than a wrapper module keep ``forward``'s signature (input names) and are traced
    by ``torch.export``, so saved packages cast too.
    """
    module = module.to(dtype)
    module.register_forward_pre_hook(functools.partial(_cast_inputs, dtype))
    module.register_forward_hook(_float32_outputs)
    return module


def _torch_cast(model: Model, method: str, **unknown: Any) -> Quantized:
    _no_unknown(unknown)
    torch = _torch()
    dtype = torch.float16 if method == "fp16" else torch.bfloat16
    wrapped = cast_module(_module_copy(model), dtype)
    notes = []
    if method == "fp16":
        notes.append("fp16 matmuls on CPU are often slower than fp32; bf16 uses AVX-512 BF16 where the CPU has it")
    return Quantized(_torch_model(wrapped, model), {"weights": method, "io_types": "kept (FP32)"}, notes)


def _no_unknown(unknown: dict[str, Any]) -> None:
    if unknown:
        raise TypeError(f"unknown option(s) for this method: {sorted(unknown)}")
