"""scikit-learn -> ONNX with skl2onnx; ``convert("onnx")`` then aligns names and checks outputs numerically.

The graph gets one FP32 input ``[None, n_features]``. Classifiers are converted with
``zipmap=False`` (probabilities as a tensor, not a list of maps); ``label`` is cast to INT64, or
for non-integer classes mapped to its index in ``classes_`` with an ``ai.onnx.ml`` ``LabelEncoder``,
so the ONNX model answers exactly like :class:`~aimass.frameworks.sklearn.backend.SklearnBackend`.
Outputs the backend does not have (the scores skl2onnx adds for ``LinearSVC``) are dropped;
:func:`aimass.frameworks.onnx.graph.align` then renames ``variable`` to ``prediction`` and drops
regressors' trailing unit dimension. The converter needs ``skl2onnx`` (``aimass[compress]``).

Example:
    >>> o = Model.load(clf).convert("onnx", data=X)   # doctest: +SKIP
    >>> o.report.max_abs_error                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from aimass.dependencies import require
from aimass.errors import ConversionError
from aimass.frameworks.sklearn.backend import SklearnBackend

__all__ = ["to_onnx"]

_ML_DOMAIN = "ai.onnx.ml"


def to_onnx(source: SklearnBackend, *, opset: int | None = None) -> Any:
    """The ``onnx.ModelProto`` of a scikit-learn backend's estimator (names not yet aligned)."""
    skl2onnx = require("skl2onnx", feature="the sklearn backend", extra="compress")
    types = require("skl2onnx.common.data_types", feature="the sklearn backend", extra="compress", package="skl2onnx")
    onnx = require("onnx", feature="the onnx backend", extra="onnx")
    backend = SklearnBackend.of(source)
    estimator = backend.estimator
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(final): {"zipmap": False}} if backend.has_proba else None
    spec = backend.schema.inputs[0]
    try:
        proto = skl2onnx.to_onnx(
            estimator,
            initial_types=[(spec.name, types.FloatTensorType([None, backend.n_features]))],
            target_opset=opset,
            options=options,
        )
    except Exception as e:  # skl2onnx raises MissingShapeCalculator, RuntimeError, NameError ...
        raise ConversionError(
            f"skl2onnx could not convert this {type(estimator).__name__}: {type(e).__name__}: {e}"
        ) from e
    graph = proto.graph
    del graph.output[len(backend.schema.outputs) :]
    _free_output_names(proto, backend.schema.output_names)
    if backend.is_classifier:
        _label_as_int64(onnx, proto, backend)
    return proto


def _free_output_names(proto: Any, names: list[str]) -> None:
    """Rename internal tensors that hold a name ``align`` will give an output (SGDClassifier's ``label``)."""
    graph = proto.graph
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {
        i.name for i in (*graph.input, *graph.initializer)
    }
    for graph_output, name in zip(graph.output, names, strict=False):
        if graph_output.name == name or name not in taken:
            continue
        fresh = f"{name}_inner"
        while fresh in taken:
            fresh += "_"
        taken.add(fresh)
        for n in graph.node:
            n.input[:] = [fresh if v == name else v for v in n.input]
            n.output[:] = [fresh if v == name else v for v in n.output]
        for i in (*graph.initializer, *graph.value_info):
            if i.name == name:
                i.name = fresh


def _label_as_int64(onnx: Any, proto: Any, backend: Any) -> None:
    """Make the first output INT64: a Cast for numeric labels, a LabelEncoder to class indices otherwise."""
    graph = proto.graph
    label = graph.output[0]
    elem = label.type.tensor_type.elem_type
    if elem == onnx.TensorProto.INT64 and not backend.label_is_index:
        return
    # skl2onnx already calls its output "label": rename the producer's tensor, re-create "label" as INT64.
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.input}
    name = label.name
    raw = f"{name}_raw"
    while raw in taken:
        raw += "_"
    for n in graph.node:
        n.input[:] = [raw if v == name else v for v in n.input]
        n.output[:] = [raw if v == name else v for v in n.output]
    if not backend.label_is_index:
        node = onnx.helper.make_node("Cast", [raw], [name], to=onnx.TensorProto.INT64)
    elif elem == onnx.TensorProto.STRING:
        node = onnx.helper.make_node(
            "LabelEncoder",
            [raw],
            [name],
            domain=_ML_DOMAIN,
            keys_strings=[str(c) for c in backend.classes],
            values_int64s=list(range(len(backend.classes))),
            default_int64=-1,
        )
    elif elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        source = raw
        if elem == onnx.TensorProto.DOUBLE:
            source = f"{raw}_f32"
            graph.node.append(onnx.helper.make_node("Cast", [raw], [source], to=onnx.TensorProto.FLOAT))
        node = onnx.helper.make_node(
            "LabelEncoder",
            [source],
            [name],
            domain=_ML_DOMAIN,
            keys_floats=[float(c) for c in backend.classes],
            values_int64s=list(range(len(backend.classes))),
            default_int64=-1,
        )
    else:
        raise ConversionError(f"skl2onnx gave labels of ONNX type {elem}; cannot map them to class indices")
    graph.node.append(node)
    if node.domain == _ML_DOMAIN:
        _require_ml_opset(onnx, proto, 2)  # LabelEncoder's keys_*/values_* attributes came in ai.onnx.ml 2
    label.type.tensor_type.elem_type = onnx.TensorProto.INT64


def _require_ml_opset(onnx: Any, proto: Any, version: int) -> None:
    for entry in proto.opset_import:
        if entry.domain == _ML_DOMAIN:
            entry.version = max(entry.version, version)
            return
    proto.opset_import.append(onnx.helper.make_opsetid(_ML_DOMAIN, version))
