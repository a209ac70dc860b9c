"""ONNX quantizers: dynamic and static int8 through ``onnxruntime.quantization``, fp16 through onnxconverter-common.

Dynamic int8 measures drift and chooses: per-channel weights first, then per-tensor or skipping
the first and last MatMul/Gemm, keeping the first recipe whose cosine reaches ``min_cosine``.
Each function takes an :class:`~aimass.frameworks.onnx.backend.OnnxBackend` and returns a
:class:`~aimass.backends.base.Derived` with the new backend; ``compress()`` finds them through
:data:`aimass.compress.COMPRESSORS`.

Example:
    >>> q = compress(Model.load("encoder.onnx"), "int8", data=rows)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aimass.backends.base import Derived, no_unknown_options
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.onnx.backend import OnnxBackend
from aimass.measure import compare_outputs, sample_inputs

__all__ = ["dynamic_int8", "fp16", "static_int8"]


def _ort_quant() -> Any:
    return require("onnxruntime.quantization", feature="onnx quantization", extra="onnx", package="onnxruntime")


def _onnx_proto(backend: OnnxBackend) -> Any:
    onnx = require("onnx", feature="onnx quantization", extra="onnx")
    return onnx.load_model_from_string(backend.model_bytes)


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
    onnx = require("onnx", feature="onnx quantization", extra="onnx")
    try:
        with tempfile.TemporaryDirectory(prefix="aimass-prep-") as tmp:
            out = Path(tmp) / "prep.onnx"
            oq.quant_pre_process(proto, out, auto_merge=True)
            return _named(onnx.load(str(out)))
    except Exception as e:  # symbolic shape inference gives up on some exported graphs
        notes.append(f"onnxruntime pre-processing skipped ({type(e).__name__}: {str(e)[:120]})")
        return proto


def _load_onnx_bytes(data: bytes, like: OnnxBackend) -> OnnxBackend:
    return OnnxBackend.load(data, device=like.device, schema=like.schema)


def _run_quantizer(fn: Any, proto: Any, **kwargs: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="aimass-quant-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        fn(proto, out, **kwargs)
        return out.read_bytes()


def dynamic_int8(
    backend: OnnxBackend,
    *,
    data: Any = None,
    per_channel: bool | None = None,
    min_cosine: float = 0.99,
    exclude: list[str] | None = None,
    **unknown: Any,
) -> Derived:
    """Dynamic int8 (``int8``): the first recipe whose worst-row cosine reaches ``min_cosine``, else the closest."""
    no_unknown_options(unknown)
    oq = _ort_quant()
    notes: list[str] = []
    proto = _preprocessed(_named(_onnx_proto(backend)), notes)
    inputs, _ = sample_inputs(backend.schema, data)
    ref = backend.run(inputs)
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
        candidate = _load_onnx_bytes(blob, backend)
        cos = _worst_cosine(compare_outputs(ref, candidate.run(inputs)))
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
    return Derived(_load_onnx_bytes(blob, backend), settings, notes)


def _worst_cosine(drifts: list[Any]) -> float:
    values = [d.cosine for d in drifts if d.cosine is not None]
    return min(values) if values else 1.0


def static_int8(
    backend: OnnxBackend, *, data: Any = None, per_channel: bool = True, calibration_rows: int = 256, **unknown: Any
) -> Derived:
    """Static int8 in QDQ format (``int8-static``), activation ranges calibrated on ``data``."""
    no_unknown_options(unknown)
    if data is None:
        raise ValueError("int8-static needs calibration samples: pass data= with representative inputs")
    oq = _ort_quant()
    inputs = backend.schema.coerce(data)
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
        _preprocessed(_named(_onnx_proto(backend)), notes),
        calibration_data_reader=Reader(),
        quant_format=oq.QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=oq.QuantType.QInt8,
        weight_type=oq.QuantType.QInt8,
        extra_options={"ActivationSymmetric": True},
    )
    settings = {"format": "QDQ", "per_channel": per_channel, "calibration_rows": rows, "calibration": "minmax"}
    return Derived(_load_onnx_bytes(blob, backend), settings, notes)


def fp16(backend: OnnxBackend, *, data: Any = None, **unknown: Any) -> Derived:
    """float16 weights and kernels (``fp16``); inputs and outputs stay FP32."""
    no_unknown_options(unknown)
    f16 = require(
        "onnxconverter_common.float16",
        feature="compression and conversion",
        extra="compress",
        package="onnxconverter-common",
    )
    converted = f16.convert_float_to_float16(_onnx_proto(backend), keep_io_types=True)
    settings = {"weights": "fp16", "io_types": "kept (FP32)"}
    return Derived(_load_onnx_bytes(converted.SerializeToString(), backend), settings)
