"""Transformer graph fusion with onnxruntime's transformer optimizer: attention, LayerNorm, GELU, bias-add.

A BERT-like encoder exported from torch is hundreds of small ops; onnxruntime fuses them into
``Attention``, ``LayerNormalization`` (where the export spelled it out), ``BiasGelu`` and
``EmbedLayerNormalization`` kernels, which is both a faster fp32 baseline and a better starting
point for int8 (the quantizer then writes ``QAttention`` and int8 MatMuls). :func:`fuse` returns
the fused graph and what was fused, or None when nothing was (not a transformer, or patterns the
optimizer does not know).

The optimizer needs the number of attention heads and the hidden size; :func:`attention_shape`
reads them from the graph (the embedding table's width, and the ``[batch, seq, heads, head_dim]``
reshape of each attention), or they are passed as ``num_heads=`` / ``hidden_size=``.

Example:
    >>> fused = fuse(onnx.load("encoder.onnx"))                   # doctest: +SKIP
    >>> fused.counts                                              # doctest: +SKIP
    {'EmbedLayerNormalization': 1, 'Attention': 6, 'BiasGelu': 6}
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from aimass.dependencies import require

__all__ = ["Fused", "attention_shape", "fuse", "fused_backend"]


@dataclasses.dataclass
class Fused:
    """A fused graph (``onnx.ModelProto``) and how many of each fused kernel it holds."""

    proto: Any
    counts: dict[str, int]
    num_heads: int
    hidden_size: int

    def describe(self) -> str:
        """``"1 EmbedLayerNormalization, 6 Attention, ..."``."""
        return ", ".join(f"{n} {k}" for k, n in self.counts.items())


def _onnx() -> Any:
    return require("onnx", feature="onnx graph optimization", extra="onnx")


def _ints(node_or_init: Any) -> list[int] | None:
    onnx = _onnx()
    try:
        values = onnx.numpy_helper.to_array(node_or_init)
    except Exception:  # a tensor stored in a form numpy_helper does not read
        return None
    return [int(v) for v in values.reshape(-1)] if values.dtype.kind in "iu" and values.ndim == 1 else None


def _constants(graph: Any) -> dict[str, list[int]]:
    """Integer constants of the graph (initializers and ``Constant`` nodes) by tensor name, flattened."""
    found: dict[str, list[int]] = {}
    for init in graph.initializer:
        if len(init.dims) <= 1:
            values = _ints(init)
            if values is not None:
                found[init.name] = values
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and len(attr.t.dims) <= 1:
                    values = _ints(attr.t)
                    if values is not None:
                        found[node.output[0]] = values
    return found


def attention_shape(proto: Any) -> tuple[int, int] | None:
    """``(num_heads, hidden_size)`` read from an encoder graph, or None when it does not look like one.

    The hidden size is the width of the first embedding table (a 2-D initializer read by
    ``Gather``); the head count is the third entry of the most common ``Reshape`` target
    ``[batch, seq, heads, head_dim]`` with ``heads * head_dim == hidden`` (``heads`` may be -1),
    a constant or a ``Concat`` whose last two parts are constants (the TorchScript exporter's form).
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    hidden = next(
        (
            int(inits[n.input[0]].dims[1])
            for n in graph.node
            if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
        ),
        None,
    )
    if hidden is None:
        return None
    constants = _constants(graph)
    producers = {out: n for n in graph.node for out in n.output}
    shapes: list[list[int]] = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        target = node.input[1]
        if len(constants.get(target, [])) == 4:
            shapes.append(constants[target])
            continue
        concat = producers.get(target)
        if concat is not None and concat.op_type == "Concat" and len(concat.input) == 4:
            tail = [constants.get(i, []) for i in concat.input[2:]]
            if all(len(t) == 1 for t in tail):
                shapes.append([0, 0, tail[0][0], tail[1][0]])
    heads: collections.Counter[int] = collections.Counter()
    for _, _, n, d in shapes:
        if n > 0 and d > 0 and n * d == hidden:
            heads[n] += 1
        elif n == -1 and d > 0 and hidden % d == 0 and d < hidden:  # view(batch, seq, -1, head_dim)
            heads[hidden // d] += 1
    if not heads:
        return None
    return heads.most_common(1)[0][0], hidden


def _fusion_options() -> Any:
    """The optimizer's BERT fusions, less Add + LayerNorm -> ``SkipLayerNormalization``.

    That kernel is slower on the CPU than the two ops it replaces (see
    :data:`aimass.frameworks.onnx.backend.CPU_DISABLED_OPTIMIZERS`); onnxruntime's session
    optimizer still fuses them for sessions led by a GPU provider (level "extended" and above).
    """
    module = require(
        "onnxruntime.transformers.fusion_options",
        feature="onnx graph optimization",
        extra="onnx",
        package="onnxruntime",
    )
    options = module.FusionOptions("bert")
    options.enable_skip_layer_norm = False
    return options


def fuse(proto: Any, *, num_heads: int | None = None, hidden_size: int | None = None) -> Fused | None:
    """The graph with onnxruntime's transformer fusions applied, or None when nothing fused.

    Example:
        >>> fuse(proto, num_heads=12, hidden_size=384).describe()   # doctest: +SKIP
        '1 EmbedLayerNormalization, 6 Attention, 6 BiasGelu'
    """
    onnx = _onnx()
    optimizer = require(
        "onnxruntime.transformers.optimizer", feature="onnx graph optimization", extra="onnx", package="onnxruntime"
    )
    found = attention_shape(proto)
    heads = num_heads or (found[0] if found else 0)
    hidden = hidden_size or (found[1] if found else 0)
    if not heads or not hidden:
        return None
    with tempfile.TemporaryDirectory(prefix="aimass-fuse-") as tmp:
        src = Path(tmp) / "in.onnx"
        src.write_bytes(proto.SerializeToString())
        # The optimizer logs each fusion it tries and prints its statistics; callers see the counts instead.
        quiet = logging.getLogger("onnxruntime.transformers")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = optimizer.optimize_model(
                    str(src),
                    model_type="bert",
                    num_heads=heads,
                    hidden_size=hidden,
                    opt_level=0,
                    optimization_options=_fusion_options(),
                )
            # The optimizer counts every node of a kernel's type; LayerNormalization and Gelu are
            # also plain ONNX ops an exporter may have written, so count only what fusion added.
            before = collections.Counter(n.op_type for n in proto.graph.node)
            stats = model.get_fused_operator_statistics().items()
            counts = {k: int(v) - before[k] for k, v in stats if int(v) > before[k]}
            out = Path(tmp) / "fused.onnx"
            model.save_model_to_file(str(out))
            fused = onnx.load(str(out))
        except Exception:  # the optimizer's pattern matching gives up on unfamiliar graphs
            return None
        finally:
            quiet.setLevel(level)
    kernels = {"Attention", "MultiHeadAttention", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu"}
    if not kernels & set(counts):
        return None
    return Fused(fused, counts, heads, hidden)


def fused_backend(backend: Any, *, num_heads: int | None = None, hidden_size: int | None = None) -> Any:
    """A :class:`~aimass.backends.base.Derived` with the fused graph of an OnnxBackend, or None when nothing fused.

    What ``convert(..., "onnx", optimize=True)`` runs (``optimizers`` in this folder's ``plugin.py``).

    Example:
        >>> fused_backend(Model.load("encoder.onnx").backend).settings   # doctest: +SKIP
        {'fused': '1 EmbedLayerNormalization, 6 Attention, ...', 'num_heads': 12, 'hidden_size': 384}
    """
    from aimass.backends.base import Derived
    from aimass.frameworks.onnx.backend import OnnxBackend

    onnx = _onnx()
    source = OnnxBackend.of(backend)
    fused = fuse(onnx.load_model_from_string(source.model_bytes), num_heads=num_heads, hidden_size=hidden_size)
    if fused is None:
        return None
    loaded = source.derive(fused.proto.SerializeToString())
    settings = {"fused": fused.describe(), "num_heads": fused.num_heads, "hidden_size": fused.hidden_size}
    return Derived(loaded, settings, [f"fused with onnxruntime's transformer optimizer: {fused.describe()}"])
