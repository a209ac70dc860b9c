"""int8 chooses per layer by measurement: one sensitive layer stays in float, the table and the picture say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from compress_checks import assert_drift_is_real

from aimass import Model
from aimass.measure import compare_outputs

pytest.importorskip("onnxruntime")


def _onnx_with_a_sensitive_layer(path: Path, seed: int = 0) -> Path:
    """x -> matmul0 -> relu -> matmul1 -> relu -> matmul2 -> y, where matmul1 cannot take int8 inputs.

    matmul0 writes one huge channel that matmul1 ignores (its weight row is zero): in float it
    changes nothing, but dynamic int8 quantizes matmul1's input per tensor, so the huge channel
    sets the scale and the small channels that carry the signal round away.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((4, 32)).astype(np.float32)
    w0[:, 0] = 1000.0
    w1 = rng.standard_normal((32, 32)).astype(np.float32)
    w1[0, :] = 0.0
    w2 = rng.standard_normal((32, 3)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        prev = f"m{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "sensitive",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, f"w{i}") for i, w in enumerate((w0, w1, w2))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, np.ndarray]:
    path = _onnx_with_a_sensitive_layer(tmp_path_factory.mktemp("layers") / "sensitive.onnx")
    x = np.abs(np.random.default_rng(1).standard_normal((64, 4))).astype(np.float32)
    return Model.load(path), x


def test_the_sensitive_layer_stays_in_float_and_min_cosine_holds(setup: tuple[Model, np.ndarray]) -> None:
    m, x = setup
    q = m.compress("int8", data=x, repeats=0, min_cosine=0.99, smooth=False)  # smoothing would rescue it
    r = q.report
    assert r.recipes[1].recipe == "int8 per-channel, all layers" and r.recipes[1].min_cosine < 0.99
    assert r.settings["float_layers"] == ["matmul1"] and r.settings["layers_quantized"] == "2/3"
    assert r.layers[0].layer == "matmul1"
    assert {c.layer: c.kept for c in r.layers} == {"matmul1": "float", "matmul0": "int8", "matmul2": "int8"}
    assert r.layers[0].cosine_alone < 0.99 < min(c.cosine_alone for c in r.layers[1:])
    worst = min(d.min_cosine for d in compare_outputs(m.predict(x), q.predict(x)))
    assert worst >= 0.99 and r.drift[0].min_cosine == pytest.approx(worst)
    assert_drift_is_real(m, q, x, "y")
    chosen = [rec for rec in r.recipes if rec.chosen]
    assert len(chosen) == 1 and chosen[0].recipe == "int8 per-channel, 1 layer(s) in float"
    text = r.text()
    assert "most sensitive first" in text and "matmul1" in text and "<- chosen" in text
    assert "stay in float" in " ".join(r.notes)
    svg = "".join(r.svg())
    assert "recipes tried" in svg and "(chosen)" in svg and "target 0.99" in svg
    assert "(chosen)" in r._repr_html_() and "matmul1" in r._repr_html_()


def test_a_target_int8_meets_keeps_every_layer_int8(setup: tuple[Model, np.ndarray]) -> None:
    m, x = setup
    q = m.compress("int8", data=x, repeats=0, min_cosine=-1.0)  # every result meets it: no search
    assert q.report.settings["layers_quantized"] == "3/3" and not q.report.layers
    assert [rec.recipe for rec in q.report.recipes] == ["fp32 (original)", "int8 per-channel, all layers"]


def test_static_int8_is_measured_and_chosen_only_when_it_wins(setup: tuple[Model, np.ndarray]) -> None:
    m, x = setup
    q = m.compress("int8", data=x, repeats=0, min_cosine=0.99, static=True, smooth=False)
    recipes = {rec.recipe: rec for rec in q.report.recipes}
    static = recipes["int8 static (QDQ, calibrated)"]
    passing = [rec for rec in q.report.recipes[1:] if rec.min_cosine >= 0.99]
    chosen = next(rec for rec in q.report.recipes if rec.chosen)
    assert chosen.latency_ms == min(rec.latency_ms for rec in passing)
    assert static.chosen == (chosen is static)


def test_smoothing_moves_the_outlier_into_the_weights_and_keeps_every_layer_int8(
    setup: tuple[Model, np.ndarray],
) -> None:
    m, x = setup
    q = m.compress("int8", data=x, repeats=0, min_cosine=0.99)
    r = q.report
    recipes = {rec.recipe: rec for rec in r.recipes}
    plain = recipes["int8 per-channel, all layers"]
    chosen = next(rec for rec in r.recipes if rec.chosen)
    assert chosen.recipe.startswith("int8 per-channel, smoothed (alpha") and chosen.recipe.endswith("all layers")
    assert plain.min_cosine < 0.99 <= chosen.min_cosine
    assert r.settings["layers_quantized"] == "3/3" and r.settings["smoothed"] and "float_layers" not in r.settings
    worst = min(float(d.min_cosine or 0.0) for d in compare_outputs(m.predict(x), q.predict(x)))
    assert worst >= 0.99 and worst > plain.min_cosine
    assert any(n.startswith("smoothed (alpha") and "outliers moved into the weights" in n for n in r.notes)
    assert_drift_is_real(m, q, x, "y")
