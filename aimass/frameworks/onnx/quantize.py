"""ONNX quantizers: dynamic and static int8 through ``onnxruntime.quantization``, fp16 through onnxconverter-common.

``int8`` measures and chooses, on the check inputs ``compress`` hands it (the caller's data, else
the model's load-time example):

1. transformer graphs are fused first (:mod:`aimass.frameworks.onnx.optimize`: attention,
   LayerNorm, GELU, bias-add), kept only when the fused graph computes what the original does;
2. dynamic int8 with per-channel weights on every MatMul/Gemm/Attention layer;
3. when that misses ``min_cosine`` (the worst row's cosine to the original), smoothing
   (:mod:`aimass.frameworks.onnx.smooth`): activation outliers are moved into the weights
   (SmoothQuant, ``alpha`` 0.65 and 0.8), alone and with the 4 channels that stay largest in
   strongly skewed MatMul inputs computed in float beside the int8 product; every layer int8;
4. when the best of those still misses, each layer is quantized alone (on the 16 check rows that
   int8 moves most) and ranked by the drift it causes, and the most sensitive are left in float,
   one more at a time, until the target holds;
5. static int8 (QDQ, activation ranges calibrated on the data) is measured too with
   ``static=True``, or when everything missed the target and there are at least 32 rows of data.

Among the recipes that meet the target, the fastest (timed on up to 16 check rows and on one
row) is chosen; recipes that miss it are not timed. Every recipe tried (latency, worst cosine)
and the per-layer table go into the Derived's settings under ``recipes`` and ``per_layer``;
:func:`aimass.compress.compress` puts them in the report. ``compress()`` finds these functions
through this folder's manifest (``compressors`` in ``plugin.py``).

Example:
    >>> q = compress(Model.load("encoder.onnx"), "int8", data=rows)   # doctest: +SKIP
    >>> print(q.report)                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aimass.backends.base import Derived, no_unknown_options
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.onnx.backend import OnnxBackend
from aimass.frameworks.onnx.int8_cpu import cpu_isa, kernel_recipe
from aimass.frameworks.onnx.optimize import fuse
from aimass.frameworks.onnx.smooth import FLOAT_PART, SMOOTH_MUL, input_ranges, outlier_ratio, smoothable
from aimass.frameworks.onnx.smooth import smooth as smooth_graph
from aimass.measure import compare_outputs, sample_inputs, time_calls

__all__ = ["dynamic_int8", "fp16", "static_int8"]

# Layers onnxruntime quantizes with int8 weights: matrix products, and fused attention (QAttention).
WEIGHT_OPS = ("MatMul", "Gemm", "Attention")
STATIC_MIN_ROWS = 32
# Smoothing strengths tried (0: all outliers stay in the activations, 1: all move into the weights).
SMOOTH_ALPHAS = (0.65, 0.8)
FLOAT_CHANNELS = 4  # outlier channels per strongly skewed MatMul input that stay float
RANK_ROWS = 16
TIME_ROWS = 16


def _ort_quant() -> Any:
    return require("onnxruntime.quantization", feature="onnx quantization", extra="onnx", package="onnxruntime")


def _onnx() -> Any:
    return require("onnx", feature="onnx quantization", extra="onnx")


def _onnx_proto(backend: OnnxBackend) -> Any:
    return _onnx().load_model_from_string(backend.model_bytes)


def _weight_nodes(proto: Any) -> list[tuple[str, str]]:
    """``(name, op)`` of MatMul/Gemm/Attention nodes whose weight (second input) is a constant, in graph order."""
    inits = {i.name for i in proto.graph.initializer}
    return [
        (n.name, n.op_type)
        for n in proto.graph.node
        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits
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
    onnx = _onnx()
    try:
        with tempfile.TemporaryDirectory(prefix="aimass-prep-") as tmp:
            out = Path(tmp) / "prep.onnx"
            oq.quant_pre_process(proto, out, auto_merge=True)
            return _named(onnx.load(str(out)))
    except Exception as e:  # symbolic shape inference gives up on some exported graphs
        notes.append(f"onnxruntime pre-processing skipped ({type(e).__name__}: {str(e)[:120]})")
        return proto


def _not_preprocessing_advice(record: logging.LogRecord) -> bool:
    # onnxruntime logs this on the root logger for every call when shape inference was not run
    # first; the search quantizes dozens of times, and the graph was fused or pre-processed already.
    return "pre-processing before quantization" not in record.getMessage()


def _run_quantizer(fn: Any, proto: Any, **kwargs: Any) -> bytes:
    root = logging.getLogger()
    root.addFilter(_not_preprocessing_advice)
    try:
        with tempfile.TemporaryDirectory(prefix="aimass-quant-") as tmp:
            out = Path(tmp) / "quantized.onnx"
            fn(proto, out, **kwargs)
            return out.read_bytes()
    finally:
        root.removeFilter(_not_preprocessing_advice)


def _worst_cosine(drifts: list[Any]) -> float:
    values = [d.min_cosine for d in drifts if d.min_cosine is not None]
    return min(values) if values else 1.0


@dataclasses.dataclass
class _Tried:
    """One recipe, measured on the check inputs."""

    name: str
    blob: bytes
    cosine: float
    latency_ms: float  # a batch of up to TIME_ROWS check rows
    excluded: list[str]
    single_ms: float = float("nan")  # one row: per-call costs that a large batch hides (activation quantization)
    alpha: float | None = None  # smoothing strength of the graph it quantized; None: not smoothed
    kind: str = "dynamic"  # "dynamic" (every layer the caller did not exclude), "in float" (the search's), "static"

    def cost(self, baseline: _Tried) -> float:
        """Geometric mean of the time ratios to ``baseline`` at one row and at the whole batch (lower is faster)."""
        return float(np.sqrt((self.latency_ms / baseline.latency_ms) * (self.single_ms / baseline.single_ms)))


class _Bench:
    """Builds, runs and times candidates against the original's outputs on the same inputs."""

    def __init__(self, backend: OnnxBackend, inputs: dict[str, np.ndarray]) -> None:
        self.backend = backend
        self.inputs = inputs
        self.row = {k: v[:1] for k, v in inputs.items()}
        self.batch = {k: v[:TIME_ROWS] for k, v in inputs.items()}  # enough rows to time batched kernels
        self.ref = backend.run(inputs)
        self.baseline = _Tried(
            "fp32 (original)", b"", 1.0, self.time(backend, self.batch, calls=2), [], self.time(backend, self.row)
        )

    @staticmethod
    def time(candidate: OnnxBackend, inputs: dict[str, np.ndarray], calls: int = 3) -> float:
        """The fastest of ``calls`` runs on ``inputs``, settled first (the previous candidate's threads, warm-up)."""
        call = functools.partial(candidate.run, inputs)
        return 1e3 * float(time_calls(call, seconds=0.0, min_calls=calls, settle=True).min())

    def measure(
        self,
        name: str,
        blob: bytes,
        excluded: list[str],
        *,
        timed: bool = True,
        time_from: float | None = None,
        alpha: float | None = None,
        kind: str = "dynamic",
    ) -> _Tried:
        """Worst cosine on the check inputs, and latency when ``timed`` and the cosine reaches ``time_from``.

        Recipes that miss the target cannot be chosen, so ``time_from=min_cosine`` saves their timing.
        """
        candidate = self.backend.derive(blob)
        cos = _worst_cosine(compare_outputs(self.ref, candidate.run(self.inputs)))
        if not timed or (time_from is not None and cos < time_from):
            return _Tried(name, blob, cos, float("nan"), excluded, alpha=alpha, kind=kind)
        batch, single = self.time(candidate, self.batch, calls=2), self.time(candidate, self.row, calls=3)
        return _Tried(name, blob, cos, batch, excluded, single, alpha=alpha, kind=kind)


def _fused_base(backend: OnnxBackend, bench: _Bench, notes: list[str], **shape: Any) -> tuple[Any, bool]:
    """The graph int8 starts from: fused when fusion applies and keeps the outputs, else pre-processed."""
    proto = _named(_onnx_proto(backend))
    fused = fuse(proto, **shape)
    if fused is not None:
        blob = fused.proto.SerializeToString()
        tried = bench.measure("fp32 fused", blob, [], timed=False)
        if tried.cosine >= 0.9999:
            notes.append(f"fused before quantizing: {fused.describe()}")
            return _named(fused.proto), True
        notes.append(f"fusion changed the outputs (worst cosine {tried.cosine:.5f}); quantizing the plain graph")
    return _preprocessed(proto, notes), False


def _dynamic(
    proto: Any, *, per_channel: bool, exclude: list[str], only: list[str] | None = None, reduce_range: bool = False
) -> bytes:
    oq = _ort_quant()
    # the outlier channels smoothing split off stay float: that is their purpose
    exclude = [*exclude, *(n.name for n in proto.graph.node if n.name.endswith(FLOAT_PART))]
    extra: dict[str, Any] = {"DefaultTensorType": _onnx().TensorProto.FLOAT}  # fused contrib ops have no inferred types
    return _run_quantizer(
        oq.quantize_dynamic,
        copy.deepcopy(proto),
        weight_type=oq.QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        nodes_to_exclude=exclude or None,
        nodes_to_quantize=only,
        extra_options=extra,
    )


def _exclusion_steps(n: int) -> Iterator[int]:
    """How many of the most sensitive layers to leave in float, in the order tried: 1, 2, 3, 4, 6, 8, 12 ..."""
    k, step = 1, 1
    while k < n:
        yield k
        if k >= 4:
            step = max(step, k // 2)
        k += step
    yield n


def _row_cosines(ref: list[np.ndarray], got: list[np.ndarray]) -> np.ndarray:
    """Per row, the worst cosine over the float outputs (rows along the first axis)."""
    worst: np.ndarray | None = None
    for a, b in zip(ref, got, strict=True):
        if a.dtype.kind != "f" or a.ndim == 0:
            continue
        a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1), 1e-30)
        cos = (a2 * b2).sum(axis=1) / norms
        worst = cos if worst is None else np.minimum(worst, cos)
    return worst if worst is not None else np.ones(1)


def _outputs(blob: bytes, like: OnnxBackend, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(like.derive(blob).run(inputs).values())


def dynamic_int8(
    backend: OnnxBackend,
    *,
    data: Any = None,
    per_channel: bool | None = None,
    min_cosine: float = 0.99,
    exclude: list[str] | None = None,
    optimize: bool | None = None,
    static: bool | None = None,
    smooth: bool | float | None = None,
    rank_rows: int = RANK_ROWS,
    num_heads: int | None = None,
    hidden_size: int | None = None,
    isa: str | None = None,
    **unknown: Any,
) -> Derived:
    """Dynamic int8 (``int8``), smoothed and with layers chosen by measured drift; see the module docstring.

    ``exclude=[node names]`` and ``per_channel=`` fix the recipe instead of searching;
    ``optimize=False`` skips fusion; ``static=True``/``False`` forces or skips the static candidate;
    ``smooth=False`` skips smoothing, ``smooth=0.6`` tries only that alpha, ``smooth=True`` tries
    it even when plain int8 meets the target; ``rank_rows`` is how many of the worst check rows
    rank the layers. ``isa`` names the CPU class the model will run on (one of
    :data:`~aimass.frameworks.onnx.int8_cpu.ISAS`; default: this machine's), which decides whether
    weights are 7-bit (:func:`~aimass.frameworks.onnx.int8_cpu.kernel_recipe`).
    """
    no_unknown_options(unknown)
    kernels = kernel_recipe(isa or cpu_isa())
    notes: list[str] = [kernels.note()]
    inputs, _ = sample_inputs(backend.schema, data)
    bench = _Bench(backend, inputs)
    if optimize is False:
        base, fused = _preprocessed(_named(_onnx_proto(backend)), notes), False
    else:
        base, fused = _fused_base(backend, bench, notes, num_heads=num_heads, hidden_size=hidden_size)
    nodes = _weight_nodes(base)
    if not nodes:
        raise UnsupportedOperation("this ONNX graph has no MatMul/Gemm with constant weights: nothing to quantize")
    names = [n for n, _ in nodes]
    pc = True if per_channel is None else per_channel
    label = "per-channel" if pc else "per-tensor"
    quantize = functools.partial(_dynamic, per_channel=pc, reduce_range=kernels.reduce_range)
    tried: list[_Tried] = []
    layers: list[dict[str, Any]] = []
    first = bench.measure(f"int8 {label}, all layers", quantize(base, exclude=list(exclude or [])), [])
    first.excluded = list(exclude or [])
    tried.append(first)
    search, search_label, alpha = base, label, None
    ranges: dict[str, np.ndarray] = {}
    want_smooth = smooth is not False and (smooth is True or not isinstance(smooth, bool))
    if want_smooth and (first.cosine < min_cosine or smooth is not None):
        ranges = input_ranges(base, inputs)
        if not ranges:
            notes.append("smoothing: no MatMul reads its activations with a constant 2-D weight; nothing to smooth")
        alphas = SMOOTH_ALPHAS if smooth is None or isinstance(smooth, bool) else (float(smooth),)
        best: _Tried | None = None
        for a in alphas:
            for channels in (0, FLOAT_CHANNELS):
                smoothed, changed = smooth_graph(base, ranges, alpha=a, float_channels=channels)
                if not changed:
                    break
                what = f"smoothed (alpha {a:g}{f', {channels} outlier channels float' if channels else ''})"
                if channels and not any(n.name.endswith(FLOAT_PART) for n in smoothed.graph.node):
                    continue  # no input skewed enough to split: the same graph as without
                t = bench.measure(
                    f"int8 {label}, {what}, all layers",
                    quantize(smoothed, exclude=list(exclude or [])),
                    list(exclude or []),
                    time_from=min_cosine,
                    alpha=a,
                )
                tried.append(t)
                if best is None or t.cosine > best.cosine:
                    best, search, alpha, search_label = t, smoothed, a, f"{label}, {what}"
        if best is not None and best.cosine > first.cosine:
            moved = sum(n.op_type == "Mul" and n.name.endswith(SMOOTH_MUL) for n in search.graph.node)
            notes.append(
                f"{search_label.split(', ', 1)[1]}: activation outliers moved into the weights of {moved} of "
                f"{len(ranges)} layer input(s) (the others are flat): worst cosine with all layers int8 "
                f"{first.cosine:.5f} -> {best.cosine:.5f} (the most accurate smoothing; the fastest recipe "
                "that meets the target may be another, see recipes)"
            )
        else:
            search, alpha, search_label = base, None, label
    if exclude is None and len(names) > 1 and all(t.cosine < min_cosine for t in tried):
        layers = _leave_sensitive_in_float(
            bench, search, search_label, alpha, names, dict(nodes), quantize, min_cosine, rank_rows, tried
        )
        if ranges:
            users = smoothable(base)
            outlier = {n.name: outlier_ratio(ranges[act]) for act, ns in users.items() if act in ranges for n in ns}
            for row in layers:
                if row["layer"] in outlier:
                    row["input_outlier"] = outlier[row["layer"]]
    rows = next(iter(inputs.values())).shape[0]
    missed = all(t.cosine < min_cosine for t in tried)
    if static or (static is None and missed and data is not None and rows >= STATIC_MIN_ROWS):
        tried.append(_static_candidate(base, bench, inputs, pc, kernels.reduce_range, notes))
    passing = [t for t in tried if t.cosine >= min_cosine]
    # The fastest passing recipe at one row and at the whole batch together (geometric mean of both ratios).
    chosen = min(passing, key=lambda t: t.cost(bench.baseline)) if passing else max(tried, key=lambda t: t.cosine)
    if not passing:
        notes.append(f"no recipe reached cosine {min_cosine}; kept the closest ({chosen.cosine:.5f})")
    if chosen.excluded:
        all_int8 = max(t.cosine for t in tried if t.kind == "dynamic")
        why = ", ".join(
            f"{r['layer']} ({r['cosine_alone']:.5f} alone"
            + (f", input max/median {r['input_outlier']:.0f}" if r.get("input_outlier") else "")
            + ")"
            for r in layers
            if r["layer"] in set(chosen.excluded)
        )
        notes.append(
            f"{len(chosen.excluded)} layer(s) stay in float because quantizing them moved the output most"
            + (f": {why}" if why else "")
            + f" (worst cosine with all layers int8: {all_int8:.5f} < {min_cosine})"
        )
    kept = set(chosen.excluded)
    for row in layers:
        row["kept"] = "float" if row["layer"] in kept else "int8"
    settings: dict[str, Any] = {
        "recipe": chosen.name,
        "per_channel": pc,
        "weight_type": "int8",
        "cpu_class": kernels.isa,
        "reduce_range": kernels.reduce_range,
        "fused": fused,
        "smoothed": chosen.alpha is not None,
        "layers_quantized": f"{len(names) - len(kept)}/{len(names)}",
        "min_cosine": min_cosine,
        "recipes": [
            {
                "recipe": t.name,
                "latency_ms": t.latency_ms,
                "single_ms": t.single_ms,
                "min_cosine": t.cosine,
                "chosen": t is chosen,
            }
            for t in [bench.baseline, *tried]
        ],
        "check_rows": rows,
    }
    if chosen.alpha is not None:
        settings["smooth_alpha"] = chosen.alpha
    if layers:
        settings["per_layer"] = layers
    if chosen.excluded:
        settings["float_layers"] = chosen.excluded
    return Derived(backend.derive(chosen.blob), settings, notes)


def _leave_sensitive_in_float(
    bench: _Bench,
    base: Any,
    label: str,
    alpha: float | None,
    names: list[str],
    ops: dict[str, str],
    quantize: Callable[..., bytes],
    min_cosine: float,
    rank_rows: int,
    tried: list[_Tried],
) -> list[dict[str, Any]]:
    """Rank layers by the drift each causes alone, then leave the worst in float until ``min_cosine`` holds.

    Ranking runs on the ``rank_rows`` check rows that int8 on every layer moves most (the rows
    that decide the worst cosine), so it costs one quantization and a small run per layer.
    """
    everything = _outputs(quantize(base, exclude=[]), bench.backend, bench.inputs)
    worst_rows = np.argsort(_row_cosines(list(bench.ref.values()), everything))[:rank_rows]
    few = {k: v[worst_rows] for k, v in bench.inputs.items()}
    ref = [v[worst_rows] for v in bench.ref.values()]
    alone = {
        name: float(_row_cosines(ref, _outputs(quantize(base, exclude=[], only=[name]), bench.backend, few)).min())
        for name in names
    }
    ranked = sorted(names, key=lambda n: alone[n])

    def leave_in_float(k: int) -> _Tried:
        skip = ranked[:k]
        t = bench.measure(
            f"int8 {label}, {k} layer(s) in float",
            quantize(base, exclude=skip),
            skip,
            time_from=min_cosine,
            alpha=alpha,
            kind="in float",
        )
        tried.append(t)
        return t

    low = 0  # the most layers in float known to miss the target
    for k in _exclusion_steps(len(ranked)):
        if k == len(ranked):
            break  # everything in float is no int8 at all
        if leave_in_float(k).cosine >= min_cosine:
            while k - low > 1:  # bisect between the last miss and this hit: fewer layers in float is faster
                mid = (low + k) // 2
                if leave_in_float(mid).cosine >= min_cosine:
                    k = mid
                else:
                    low = mid
            break
        low = k
    return [{"layer": n, "op": ops[n], "cosine_alone": alone[n]} for n in ranked]


def _static_candidate(
    base: Any, bench: _Bench, inputs: dict[str, np.ndarray], per_channel: bool, reduce_range: bool, notes: list[str]
) -> _Tried:
    """Static QDQ int8 (uint8 activations) on MatMul/Gemm, calibrated on ``inputs``; measured like the others."""
    oq = _ort_quant()
    try:
        blob = _run_quantizer(
            oq.quantize_static,
            copy.deepcopy(base),
            calibration_data_reader=_reader(oq, inputs, len(next(iter(inputs.values())))),
            quant_format=oq.QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=oq.QuantType.QUInt8,
            weight_type=oq.QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            extra_options={"DefaultTensorType": _onnx().TensorProto.FLOAT},
        )
    except Exception as e:  # calibration runs the graph with extra outputs; some graphs refuse
        notes.append(f"static int8 not measured ({type(e).__name__}: {str(e)[:120]})")
        return _Tried("int8 static (QDQ)", b"", -1.0, float("inf"), [], kind="static")
    return bench.measure("int8 static (QDQ, calibrated)", blob, [], kind="static")


def _reader(oq: Any, inputs: dict[str, np.ndarray], rows: int) -> Any:
    class Reader(oq.CalibrationDataReader):
        """Feeds the caller's rows one at a time (ranges are collected per activation)."""

        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {k: v[i : i + 1] for k, v in inputs.items()} for i in range(rows)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Reader()


def static_int8(
    backend: OnnxBackend,
    *,
    data: Any = None,
    per_channel: bool = True,
    calibration_rows: int = 256,
    isa: str | None = None,
    **unknown: Any,
) -> Derived:
    """Static int8 in QDQ format (``int8-static``), activation ranges calibrated on ``data``.

    ``isa`` is the CPU class it will run on, as for :func:`dynamic_int8`.
    """
    no_unknown_options(unknown)
    kernels = kernel_recipe(isa or cpu_isa())
    if data is None:
        raise ValueError("int8-static needs calibration samples: pass data= with representative inputs")
    oq = _ort_quant()
    inputs = backend.schema.coerce(data)
    n = next(iter(inputs.values())).shape[0]
    rows = min(n, calibration_rows)
    notes: list[str] = [kernels.note()]
    blob = _run_quantizer(
        oq.quantize_static,
        _preprocessed(_named(_onnx_proto(backend)), notes),
        calibration_data_reader=_reader(oq, inputs, rows),
        quant_format=oq.QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=kernels.reduce_range,
        activation_type=oq.QuantType.QInt8,
        weight_type=oq.QuantType.QInt8,
        extra_options={"ActivationSymmetric": True},
    )
    settings = {
        "format": "QDQ",
        "per_channel": per_channel,
        "calibration_rows": rows,
        "calibration": "minmax",
        "cpu_class": kernels.isa,
        "reduce_range": kernels.reduce_range,
    }
    return Derived(backend.derive(blob), settings, notes)


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
    return Derived(backend.derive(converted.SerializeToString()), settings)
