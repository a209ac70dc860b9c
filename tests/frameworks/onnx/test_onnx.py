"""onnx backend specifics: string (BYTES) tensors and session options."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model, ModelLoadError, SchemaError

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


@pytest.mark.parametrize("value", ["0", False])
def test_session_config_entries_are_applied(tmp_path: Path, value: object) -> None:
    opts = {"session_options": {"session.intra_op.allow_spinning": value}}
    m = Model.load(_string_identity(tmp_path / "s.onnx"), options=opts)
    so = m.backend.session.get_session_options()  # type: ignore[attr-defined]
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # onnxruntime reads "0"/"1"


@pytest.mark.parametrize(
    ("extra", "fused"),
    [
        ({}, False),
        ({"providers": [("CPUExecutionProvider", {})]}, False),  # the (name, options) form is the CPU too
        ({"disabled_optimizers": []}, True),
        ({"disabled_optimizers": "SkipLayerNormFusion"}, False),  # one name, not its letters
    ],
)
def test_cpu_sessions_keep_add_and_layernorm_apart(tmp_path: Path, extra: dict[str, object], fused: bool) -> None:
    # onnxruntime's CPU SkipLayerNormalization is slower than Add + LayerNormalization
    # (benchmarks/onnx_skip_layernorm.py); the default skips that fusion, disabled_optimizers=[] keeps it.
    import onnx

    optimized = tmp_path / "optimized.onnx"
    options: dict[str, object] = {"session_options": {"optimized_model_filepath": str(optimized)}, **extra}
    m = Model.load(models.onnx_residual_layernorm(8), backend="onnx", options=options)
    ops = {n.op_type for n in onnx.load(str(optimized)).graph.node}
    assert ("SkipLayerNormalization" in ops) is fused
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
    s = x + 1.0
    mean, var = s.mean(-1, keepdims=True), s.var(-1, keepdims=True)
    expected = 1.5 * (s - mean) / np.sqrt(var + 1e-12) + 0.1
    np.testing.assert_allclose(m.predict({"x": x, "skip": np.ones_like(x)})["y"], expected, atol=1e-5)


def test_derived_sessions_keep_the_options(tmp_path: Path) -> None:
    # A fused or quantized graph runs with the session options the user gave the original.
    m = Model.load(_string_identity(tmp_path / "s.onnx"), options={"session_options": {"intra_op_num_threads": 1}})
    derived = m.backend.derive(m.backend.model_bytes)  # type: ignore[attr-defined]
    assert derived.session.get_session_options().intra_op_num_threads == 1
    assert derived.schema == m.schema and derived.device == m.backend.device


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"disabled_optimizers": 5},
            "option disabled_optimizers: expected an optimizer name or a list of names, got int 5",
        ),
        (
            {"session_options": [1]},
            "option session_options: expected an onnxruntime.SessionOptions or a dict, got list",
        ),
        (
            {"session_options": {"no_such": 1}},
            "option session_options['no_such']: onnxruntime.SessionOptions has no such attribute",
        ),
        (
            {"session_options": {"intra_op_num_threads": "two"}},
            "option session_options['intra_op_num_threads']: expected int, got str 'two'",
        ),
    ],
)
def test_bad_session_options_are_a_load_error_naming_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        Model.load(models.onnx_residual_layernorm(8), backend="onnx", options=options)
    assert str(caught.value).startswith(message)
