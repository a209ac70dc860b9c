"""SmoothQuant-style smoothing of an ONNX graph: move activation outliers into the weights before int8.

Dynamic int8 quantizes a MatMul's input with one scale per call, so a few channels with large
values (trained transformers have them: all-MiniLM-L6-v2's FFN inputs reach 10-50x the median
channel) set the scale and the small channels that carry the signal round away. Smoothing
(Xiao et al., 2023, "SmoothQuant") divides each input channel ``j`` by ``s_j`` and multiplies row
``j`` of the weight by ``s_j``: ``(x / s) @ (s * W) == x @ W`` exactly in float, but the int8
input now has a flat range and the weight, which is quantized per output channel, takes the
outliers it handles well. ``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``, ranges calibrated on
the check data.

Encoders such as BERT normalise *after* the residual add, so the LayerNorm output that feeds a
MatMul is also the residual stream and its gamma cannot absorb ``1 / s``; a ``Mul`` by ``1 / s``
is inserted in front of the weight layers instead (one element-wise op per smoothed input, cheap
next to the matrix product; layers reading the same input share one ``Mul``).

Example:
    >>> ranges = input_ranges(proto, inputs)                   # doctest: +SKIP
    >>> smoothed, count = smooth(proto, ranges, alpha=0.5)     # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from aimass.dependencies import require

__all__ = ["FLOAT_PART", "MIN_SMOOTH", "SMOOTH_MUL", "input_ranges", "outlier_ratio", "smooth", "smoothable"]

# Ops whose input 0 is an activation multiplied by a 2-D weight initializer in input 1 (rows = input channels).
SMOOTHABLE_OPS = ("MatMul", "Attention")
# Inputs whose largest channel exceeds this many times the median get outlier channels split off.
MIN_OUTLIER = 8.0
# Inputs flatter than this (max / median channel range) are left as they are: smoothing them moves
# rounding error into the weights for nothing. On all-MiniLM-L6-v2 that skips the attention-output
# inputs of layers 1-5 (2.4-2.8): five Muls fewer per call, and the best recipe's worst cosine
# stayed put (check data 0.9954 -> 0.9951, held-out 0.9906 -> 0.9912).
MIN_SMOOTH = 4.0
CHUNK_ROWS = 16
FLOAT_PART = "_outlier_float"
SMOOTH_MUL = "_smooth"  # suffix of the Mul node in front of each smoothed input


def _onnx() -> Any:
    return require("onnx", feature="onnx quantization", extra="onnx")


def smoothable(proto: Any) -> dict[str, list[Any]]:
    """Activation tensor name -> the weight nodes reading it (2-D float weight initializers used by that node only)."""
    numpy_helper = _onnx().numpy_helper
    inits = {i.name: i for i in proto.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in proto.graph.node:
        for name in node.input:
            uses[name] += 1
    found: dict[str, list[Any]] = defaultdict(list)
    for node in proto.graph.node:
        if node.op_type not in SMOOTHABLE_OPS or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or len(w.dims) != 2 or uses[w.name] != 1 or node.input[0] in inits:
            continue
        if numpy_helper.to_array(w).dtype != np.float32:
            continue
        found[node.input[0]].append(node)
    return dict(found)


def input_ranges(proto: Any, inputs: dict[str, np.ndarray], names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max absolute value of the smoothable activations, over ``inputs``.

    Runs the graph once with those activations added as outputs.

    Example:
        >>> input_ranges(proto, {"x": x})["h0"].shape               # doctest: +SKIP
        (384,)
    """
    onnx = _onnx()
    ort = require("onnxruntime", feature="onnx quantization", extra="onnx")
    wanted = list(names if names is not None else smoothable(proto))
    graph_inputs = {i.name for i in proto.graph.input}
    found: dict[str, np.ndarray] = {}
    for name in wanted:  # a graph input's range is the data's own: no run needed (nor valid as an output)
        if name in graph_inputs and name in inputs:
            v = np.asarray(inputs[name])
            found[name] = _channel_max(v)
    wanted = [n for n in wanted if n not in found]
    if not wanted:  # session.run([]) would return every output, not none
        return found
    probe = copy.deepcopy(proto)
    existing = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the probed tensors
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs() if i.name in inputs}
    rows = len(next(iter(feeds.values()))) if feeds else 0
    for start in range(0, max(rows, 1), CHUNK_ROWS):  # a few rows at a time: activations of every layer at once
        values = session.run(wanted, {k: v[start : start + CHUNK_ROWS] for k, v in feeds.items()})
        for name, v in zip(wanted, values, strict=True):
            m = _channel_max(v)
            found[name] = m if name not in found else np.maximum(found[name], m)
    return found


def _channel_max(values: np.ndarray) -> np.ndarray:
    """Max absolute value per channel (last axis), over every other axis."""
    return np.abs(values.reshape(-1, values.shape[-1])).max(axis=0).astype(np.float32)


def outlier_ratio(ranges: np.ndarray) -> float:
    """How far the largest channel sticks out: ``max / median`` of the per-channel ranges."""
    return float(ranges.max() / max(float(np.median(ranges)), 1e-12))


def smooth(
    proto: Any,
    ranges: dict[str, np.ndarray],
    *,
    alpha: float | Mapping[str, float] = 0.5,
    only: set[str] | None = None,
    float_channels: int = 0,
    min_outlier: float = MIN_OUTLIER,
    min_ratio: float = MIN_SMOOTH,
) -> tuple[Any, list[str]]:
    """A copy of ``proto`` with the inputs in ``ranges`` smoothed, and the names of the weight nodes changed.

    ``only`` limits smoothing to inputs read by those node names; inputs whose ranges are flatter
    than ``min_ratio`` (max / median) are left alone. Computes the same function in
    float (up to rounding); see the module docstring for the scale. With ``float_channels=k``, a
    MatMul whose input's ranges stick out more than ``min_outlier`` (max / median) also takes the
    ``k`` channels that stay largest after smoothing out of its int8 product: they are gathered
    and multiplied in float by their rows of the weight (a ``k``-row MatMul named
    ``<node>_outlier_float``, which quantizers must leave alone) and added back, as in
    LLM.int8()'s mixed-precision decomposition; the int8 input and weight no longer carry them.

    Example:
        >>> smoothed, nodes = smooth(proto, input_ranges(proto, inputs), alpha=0.5)   # doctest: +SKIP
    """
    onnx = _onnx()
    numpy_helper = onnx.numpy_helper
    out = copy.deepcopy(proto)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    changed: list[str] = []
    for activation, nodes in smoothable(out).items():
        if activation not in ranges or (only is not None and not any(n.name in only for n in nodes)):
            continue
        if outlier_ratio(ranges[activation]) < min_ratio:
            continue
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        if any(w.shape[0] != ranges[activation].shape[0] for w in weights):
            continue
        a = np.maximum(ranges[activation].astype(np.float64), 1e-5)
        w_max = np.maximum(np.max([np.abs(w).max(axis=1) for w in weights], axis=0).astype(np.float64), 1e-5)
        power = alpha if isinstance(alpha, (int, float)) else alpha.get(activation, 0.5)
        s = np.clip(a**power / w_max ** (1.0 - power), 1e-4, 1e4)
        inverse = 1.0 / s
        split = (
            float_channels > 0
            and len(nodes) == 1
            and nodes[0].op_type == "MatMul"
            and outlier_ratio(ranges[activation]) >= min_outlier
        )
        top = np.argsort(-(a * inverse))[:float_channels] if split else np.zeros(0, dtype=np.int64)
        inverse[top] = 0.0  # the int8 product no longer sees them
        for node, w in zip(nodes, weights, strict=True):
            scaled_w = w * s[:, None]
            scaled_w[top] = 0.0  # nor do the weight's per-column scales
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(scaled_w.astype(np.float32), node.input[1]))
        if split:
            _add_float_part(graph, nodes[0], activation, top, weights[0][top])
        scaled = f"{activation}_smoothed"
        inv = f"{activation}_smooth_scale"
        graph.initializer.append(numpy_helper.from_array(inverse.astype(np.float32), inv))
        for node in nodes:
            node.input[0] = scaled
            changed.append(node.name)
        graph.node.append(onnx.helper.make_node("Mul", [activation, inv], [scaled], name=f"{activation}{SMOOTH_MUL}"))
    _topological(graph)
    return out, changed


def _add_float_part(graph: Any, node: Any, activation: str, channels: np.ndarray, rows: np.ndarray) -> None:
    """``node``'s output += ``activation[..., channels] @ rows``, in float."""
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    name = f"{node.name}{FLOAT_PART}"
    out = node.output[0]
    node.output[0] = f"{out}_int8_part"
    graph.initializer.append(numpy_helper.from_array(channels.astype(np.int64), f"{name}_channels"))
    graph.initializer.append(numpy_helper.from_array(rows.astype(np.float32), f"{name}_rows"))
    graph.node.extend(
        [
            helper.make_node(
                "Gather", [activation, f"{name}_channels"], [f"{name}_in"], name=f"{name}_gather", axis=-1
            ),
            helper.make_node("MatMul", [f"{name}_in", f"{name}_rows"], [f"{name}_out"], name=name),
            helper.make_node("Add", [node.output[0], f"{name}_out"], [out], name=f"{name}_add"),
        ]
    )


def _topological(graph: Any) -> None:
    """Reorder ``graph.node`` so that every node follows its producers (the inserted Muls were appended)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[Any] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a missing input: leave the remaining order as it was
            ordered.extend(rest)
            break
        pending = rest
    copies = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)
