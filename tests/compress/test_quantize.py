"""Quantization on real small models: the new Model works, the original is untouched, the report's numbers are real."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from compress_checks import assert_drift_is_real, saved_size

from aimass import CompressionRejected, Model, UnsupportedOperation
from aimass.compress import compress

pytest.importorskip("onnxruntime")


def _onnx_ops(model: Model) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load_model_from_string(model.backend.model_bytes).graph.node}


def _onnx_three_layers(path: Path, hidden: int = 64, seed: int = 0) -> Path:
    """A 4 -> hidden -> hidden -> 3 MLP (three MatMuls, so the skip-first/last recipe applies)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shapes = [(4, hidden), (hidden, hidden), (hidden, 3)]
    inits, nodes, prev = [], [], "x"
    for i, shape in enumerate(shapes):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        prev = f"m{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "mlp3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return models.dataset(256, seed=3)


@pytest.fixture()
def onnx_model(tmp_path: Path) -> Model:
    return Model.load(models.onnx_mlp(tmp_path / "mlp.onnx", hidden=64))


def test_onnx_dynamic_int8_report_is_real(
    onnx_model: Model, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, _ = data
    before = onnx_model.predict(x)["y"].copy()
    q = onnx_model.compress("int8", data=x, repeats=3)
    assert q is not onnx_model and onnx_model.report is None
    np.testing.assert_array_equal(onnx_model.predict(x)["y"], before)  # the original is unchanged
    assert q.schema == onnx_model.schema
    assert "MatMulInteger" in _onnx_ops(q) or "DynamicQuantizeMatMul" in _onnx_ops(q)
    r = q.report
    assert r.size_before == saved_size(onnx_model, tmp_path / "a") == (tmp_path / "mlp.onnx").stat().st_size
    assert r.size_after == saved_size(q, tmp_path / "b") == len(q.backend.model_bytes)
    assert_drift_is_real(onnx_model, q, x, "y")
    assert r.data == "user" and r.settings["per_channel"] is True
    assert [lat.batch for lat in r.latency] == [1, 32]
    assert all(lat.before_ms > 0 and lat.after_ms > 0 and lat.repeats == 3 for lat in r.latency)
    assert r.drift[0].cosine > 0.99


def test_onnx_dynamic_int8_measures_recipes_and_keeps_the_closest(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, _ = data
    m = Model.load(_onnx_three_layers(tmp_path / "mlp3.onnx"))
    # An unreachable target makes the search run to the end; the kept recipe must be the best measured.
    q = m.compress("int8", data=x, repeats=0, min_cosine=1.01, static=False)
    tried = q.report.recipes[1:]  # the first is the original, for the picture
    assert len(tried) >= 3 and any("no recipe reached" in n for n in q.report.notes)
    assert {c.layer for c in q.report.layers} == {"matmul0", "matmul1", "matmul2"}
    best = max(tried, key=lambda t: t.min_cosine)
    assert best.chosen and q.report.drift[0].min_cosine == pytest.approx(best.min_cosine, abs=1e-6)
    # A reachable target stops at the first recipe: per-channel, all layers.
    q2 = m.compress("int8", data=x, repeats=0, min_cosine=0.5)
    assert q2.report.settings["recipe"] == "int8 per-channel, all layers"
    assert q2.report.settings["layers_quantized"] == "3/3" and q2.report.settings["per_channel"] is True
    skip = m.compress("int8", data=x, repeats=0, per_channel=False, exclude=["matmul0", "matmul2"])
    assert skip.report.settings["layers_quantized"] == "1/3" and skip.report.settings["per_channel"] is False


def test_onnx_static_int8_calibrates_on_user_data(
    onnx_model: Model, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = data
    with pytest.raises(ValueError, match="calibration"):
        onnx_model.compress("int8-static")
    q = onnx_model.compress("int8-static", data=x, labels=y, repeats=2)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _onnx_ops(q)
    r = q.report
    assert r.settings["calibration_rows"] == 256
    assert r.metric == "accuracy"
    assert r.metric_before == float((onnx_model.predict(x)["y"].argmax(1) == y).mean())
    assert r.metric_after == float((q.predict(x)["y"].argmax(1) == y).mean())
    assert r.size_after == saved_size(q, tmp_path / "q")
    assert_drift_is_real(onnx_model, q, x, "y")


def test_onnx_fp16_halves_weights_and_keeps_fp32_io(onnx_model: Model, tmp_path: Path) -> None:
    import onnx

    q = compress(onnx_model, "fp16", repeats=2)
    graph = onnx.load_model_from_string(q.backend.model_bytes).graph
    assert {i.data_type for i in graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert q.schema == onnx_model.schema
    assert q.report.data == "generated" and q.report.samples == 64
    assert q.report.size_after == saved_size(q, tmp_path / "q") < q.report.size_before
    x = onnx_model.schema.example(batch=64, seed=0)["x"]
    assert_drift_is_real(onnx_model, q, x, "y")


def test_torch_int8_uses_torchao_and_leaves_the_original(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    x, y = data
    net = models.torch_mlp(hidden=32)
    m = Model.load(net, example_input={"x": x[:4]})
    q = m.compress("int8", data=x, labels=y, repeats=2)
    assert type(net.fc1.weight) is torch.nn.Parameter  # the caller's module is not quantized in place
    assert "Int8" in type(q.backend.module.fc1.weight).__name__
    assert q.report.settings["linear_layers"] == 2
    assert q.report.size_after == saved_size(q, tmp_path / "q")
    assert q.report.size_before == saved_size(m, tmp_path / "m")
    assert_drift_is_real(m, q, x, "output")
    assert q.report.metric_before == float((m.predict(x)["output"].argmax(1) == y).mean())


@pytest.mark.parametrize("method", ["fp16", "bf16"])
def test_torch_cast_keeps_fp32_interface(method: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    x, _ = data
    m = Model.load(models.torch_mlp(), example_input={"x": x[:4]})
    q = m.compress(method, data=x, repeats=2)
    assert q.backend.module.fc1.weight.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[method]
    assert m.backend.module.fc1.weight.dtype == torch.float32
    out = q.predict(x)["output"]
    assert out.dtype == np.float32 and q.schema == m.schema
    assert_drift_is_real(m, q, x, "output")
    # The saved package casts too: it loads back and gives the same outputs.
    reloaded = Model.load(q.save(tmp_path / "pkg"))
    np.testing.assert_allclose(reloaded.predict(x)["output"], out, rtol=1e-3, atol=1e-3)


def test_max_drop_rejects_with_the_report(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    m = Model.load(models.torch_mlp(hidden=16), example_input={"x": x[:4]})
    with pytest.raises(CompressionRejected) as info:
        m.compress("prune", amount=0.9, data=x, labels=y, max_drop=0.001, repeats=0)
    report = info.value.report
    assert report.metric_drop > 0.001 and "accuracy dropped" in str(info.value)
    kept = m.compress("fp16", data=x, labels=y, max_drop=0.05, repeats=0)
    assert kept.report.metric_drop <= 0.05
    with pytest.raises(CompressionRejected, match="top-1 agreement"):
        m.compress("prune", amount=0.9, data=x, max_drop=0.0, repeats=0)


def test_xgboost_has_no_quantization_and_says_convert() -> None:
    pytest.importorskip("xgboost")
    m = Model.load(models.xgb_classifier(n_estimators=3))
    with pytest.raises(UnsupportedOperation, match=r"convert\('onnx'\)"):
        m.compress("int8")


def test_unknown_method_and_options(onnx_model: Model) -> None:
    with pytest.raises(ValueError, match="unknown compression method"):
        onnx_model.compress("int3")
    with pytest.raises(TypeError, match="amount"):
        onnx_model.compress("fp16", amount=0.5)
    with pytest.raises(UnsupportedOperation, match="bf16"):
        onnx_model.compress("bf16")


def test_keras_int8_and_fp16_run_on_tflite(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    x, y = data
    m = Model.load(models.keras_mlp(hidden=64))
    full = m.compress("int8", data=x, labels=y, repeats=2)
    assert full.backend_name == "tflite" and full.schema.output_names == m.schema.output_names
    assert "full int8" in full.report.settings["scheme"]
    assert full.report.size_after == saved_size(full, tmp_path / "q") == len(full.backend.model_bytes)
    assert full.report.size_before == saved_size(m, tmp_path / "m")
    assert_drift_is_real(m, full, x, "logits")
    half = m.compress("fp16", data=x, repeats=0)
    assert half.report.size_after == saved_size(half, tmp_path / "h")
    assert_drift_is_real(m, half, x, "logits")
