"""onnx backend specifics: string (BYTES) tensors and session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimass import Model, SchemaError

pytest.importorskip("onnxruntime")


def _string_identity(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_bytes_tensors_round_trip_as_text(tmp_path: Path) -> None:
    # BYTES outputs that are UTF-8 come back as str, locally as remotely (docs/python-models.md).
    m = Model.load(_string_identity(tmp_path / "s.onnx"))
    assert m.schema.inputs[0].dtype.value == "BYTES"
    out = m.predict({"text": np.array([b"caf\xc3\xa9", b"b"], dtype=object)})["same"]
    assert out.tolist() == ["café", "b"]
    assert m.predict(["x", "y"])["same"].tolist() == ["x", "y"]


def test_bytes_that_are_not_utf8_are_a_schema_error(tmp_path: Path) -> None:
    m = Model.load(_string_identity(tmp_path / "s.onnx"))
    with pytest.raises(SchemaError, match="input 'text': BYTES element is not UTF-8"):
        m.predict(np.array([b"\xff"], dtype=object))


def test_session_options_are_applied(tmp_path: Path) -> None:
    m = Model.load(_string_identity(tmp_path / "s.onnx"), options={"session_options": {"intra_op_num_threads": 1}})
    assert m.backend.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
