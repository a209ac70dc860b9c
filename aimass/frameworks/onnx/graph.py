"""Make a converted ONNX graph a drop-in swap: the source schema's input and output names and ranks.

Exporters name tensors their own way (tf2onnx ``output_0``, onnxmltools ``variable``) and may
keep a trailing unit dimension the source drops (xgboost regressors: ``[-1, 1]`` vs ``[-1]``).
:func:`align` renames graph inputs, renames outputs through an ``Identity`` (or a ``Reshape``
when only a trailing unit dimension differs), so the converted model answers to the same names.

Example:
    >>> proto = align(proto, source.schema)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from aimass.dependencies import require
from aimass.errors import ConversionError
from aimass.schema import Schema

__all__ = ["align", "load_aligned"]


def _onnx() -> Any:
    return require("onnx", feature="the onnx backend", extra="onnx")


def load_aligned(proto: Any, schema: Schema) -> Any:
    """An OnnxBackend for an exporter's ``proto``, its inputs and outputs renamed to ``schema``'s.

    What ``convert(..., "onnx")`` does with every exporter's result, whatever the source framework.
    """
    from aimass.frameworks.onnx.backend import OnnxBackend

    aligned = align(proto, schema)
    try:
        return OnnxBackend.load(aligned.SerializeToString())
    except Exception as e:
        raise ConversionError(f"the converted ONNX model does not load: {e}") from e


def align(proto: Any, schema: Schema) -> Any:
    """``proto`` with graph inputs/outputs named (and outputs ranked) as in ``schema``, in order."""
    onnx = _onnx()
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != len(schema.inputs) or len(graph.output) != len(schema.outputs):
        raise ConversionError(
            f"the converted graph has {len(inputs)} inputs / {len(graph.output)} outputs, "
            f"the source {len(schema.inputs)} / {len(schema.outputs)}"
        )
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | inits | {i.name for i in graph.input}
    for graph_input, spec in zip(inputs, schema.inputs, strict=True):
        old = graph_input.name
        if old == spec.name:
            continue
        if spec.name in taken:
            raise ConversionError(f"cannot rename input {old!r} to {spec.name!r}: the graph already uses that name")
        for node in graph.node:
            node.input[:] = [spec.name if v == old else v for v in node.input]
        for out in graph.output:
            if out.name == old:
                out.name = spec.name
        graph_input.name = spec.name
        taken.add(spec.name)
    new_outputs = []
    for graph_output, spec in zip(graph.output, schema.outputs, strict=True):
        dims = graph_output.type.tensor_type.shape.dim
        squeeze = len(dims) == len(spec.shape) + 1 and dims[-1].HasField("dim_value") and dims[-1].dim_value == 1
        if graph_output.name == spec.name and not squeeze:
            kept = onnx.ValueInfoProto()
            kept.CopyFrom(graph_output)
            new_outputs.append(kept)
            continue
        if len(dims) != len(spec.shape) and not squeeze:
            raise ConversionError(
                f"output {spec.name!r}: the converted graph gives rank {len(dims)}, the source {len(spec.shape)}"
            )
        new_name = spec.name
        if new_name in taken and new_name != graph_output.name:
            raise ConversionError(f"cannot rename output {graph_output.name!r} to {new_name!r}: name in use")
        source_name = graph_output.name
        if source_name == new_name:  # squeezing an output that already has the name: free it first
            source_name = _rename_producer(graph, new_name, taken)
        if squeeze:
            shape_name = _fresh(f"{new_name}_shape", taken)
            graph.initializer.append(
                onnx.helper.make_tensor(shape_name, onnx.TensorProto.INT64, [len(spec.shape)], [-1, *spec.shape[1:]])
            )
            graph.node.append(onnx.helper.make_node("Reshape", [source_name, shape_name], [new_name]))
        else:
            graph.node.append(onnx.helper.make_node("Identity", [source_name], [new_name]))
        dim_names = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in dims][: len(spec.shape)]
        shape = [d if d is not None else f"{new_name}_d{j}" for j, d in enumerate(dim_names)]
        new_outputs.append(onnx.helper.make_tensor_value_info(new_name, graph_output.type.tensor_type.elem_type, shape))
        taken.add(new_name)
    del graph.output[:]
    graph.output.extend(new_outputs)
    return proto


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _rename_producer(graph: Any, name: str, taken: set[str]) -> str:
    """Rename the tensor ``name`` everywhere inside the graph; return its new name."""
    new = _fresh(f"{name}_raw", taken)
    for node in graph.node:
        node.output[:] = [new if v == name else v for v in node.output]
        node.input[:] = [new if v == name else v for v in node.input]
    return new
