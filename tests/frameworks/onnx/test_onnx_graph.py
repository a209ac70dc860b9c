"""align(): exporters' tensor names and trailing unit dimensions become the source schema's."""

from __future__ import annotations

import numpy as np
import pytest

from aimass import ConversionError, Model
from aimass.frameworks.onnx.graph import align
from aimass.schema import Schema, TensorSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _graph(out_shape: list[object]) -> object:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2)[:, :1].copy(), "w")
    nodes = [helper.make_node("MatMul", ["input_0", "w"], ["variable"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, out_shape)],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_renames_and_squeezes_to_the_schema() -> None:
    schema = Schema(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="prediction", dtype="FP32", shape=[-1])],
    )
    proto = align(_graph([None, 1]), schema)
    onnx.checker.check_model(proto)
    m = Model.load(proto.SerializeToString(), backend="onnx")
    assert m.schema.input_names == ["x"] and m.schema.output_names == ["prediction"]
    assert m.schema.outputs[0].shape == [-1]
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(m.predict(x)["prediction"], x @ np.arange(0, 8, 2, dtype=np.float32))


def test_refuses_rank_and_count_mismatches() -> None:
    two_d = Schema(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, 1, 1])],
    )
    with pytest.raises(ConversionError, match="rank 2, the source 3"):
        align(_graph([None, 1]), two_d)
    none = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])], outputs=[])
    with pytest.raises(ConversionError, match="1 outputs"):
        align(_graph([None, 1]), none)
