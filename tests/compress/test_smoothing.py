"""Smoothing on a tiny BERT with planted activation outliers: int8 keeps more quality, float stays exact."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tiny_bert

from aimass import Model
from aimass.frameworks.onnx.smooth import (
    FLOAT_PART,
    MIN_SMOOTH,
    SMOOTH_MUL,
    input_ranges,
    outlier_ratio,
    smooth,
    smoothable,
)
from aimass.measure import compare_outputs

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _with_outliers() -> Any:
    """A tiny BERT whose LayerNorms write two channels 40x larger, as trained encoders do (all-MiniLM-L6-v2: 20x)."""
    enc = tiny_bert.encoder(layers=2, hidden=32, heads=2, init=0.2)
    with torch.no_grad():
        for block in enc.bert.encoder.layer:
            for norm in (block.attention.output.LayerNorm, block.output.LayerNorm):
                norm.weight[:2] *= 40.0
    return enc


@pytest.fixture(scope="module")
def onnx_model() -> tuple[Model, dict[str, np.ndarray]]:
    data = tiny_bert.tokens(64, seed=3)
    source = Model.load(_with_outliers(), example_input=tiny_bert.tokens(2, seed=1))
    return source.convert("onnx", data=data, repeats=0), data


def test_smoothing_is_exact_in_float_and_flattens_the_inputs(onnx_model: tuple[Model, dict[str, np.ndarray]]) -> None:
    m, data = onnx_model
    proto = onnx.load_model_from_string(m.backend.model_bytes)  # type: ignore[attr-defined]
    ranges = input_ranges(proto, data)
    assert set(ranges) == set(smoothable(proto)) and len(ranges) >= 8  # q/k/v share one input per layer
    assert max(outlier_ratio(r) for r in ranges.values()) > 10  # the planted channels
    smoothed, changed = smooth(proto, ranges, alpha=0.5, min_ratio=0.0)
    assert len(changed) >= 8 and sum(n.op_type == "Mul" and n.name.endswith(SMOOTH_MUL) for n in smoothed.graph.node)
    after = input_ranges(smoothed, data, [f"{a}_smoothed" for a in ranges])
    assert max(outlier_ratio(r) for r in after.values()) < max(outlier_ratio(r) for r in ranges.values()) / 2
    out = Model.load(smoothed.SerializeToString(), backend="onnx", schema=m.schema).predict(data)["output"]
    np.testing.assert_allclose(out, m.predict(data)["output"], rtol=1e-4, atol=1e-4)


def test_flat_inputs_are_left_alone(onnx_model: tuple[Model, dict[str, np.ndarray]]) -> None:
    m, data = onnx_model
    proto = onnx.load_model_from_string(m.backend.model_bytes)  # type: ignore[attr-defined]
    ranges = input_ranges(proto, data)
    users = smoothable(proto)
    flat = {n.name for a, nodes in users.items() if outlier_ratio(ranges[a]) < MIN_SMOOTH for n in nodes}
    skewed = {n.name for a, nodes in users.items() if outlier_ratio(ranges[a]) >= MIN_SMOOTH for n in nodes}
    assert flat and skewed  # the planted channels skew the LayerNorm outputs only
    _, changed = smooth(proto, ranges, alpha=0.5)
    assert set(changed) == skewed


def test_smoothing_raises_the_worst_cosine_of_dynamic_int8(onnx_model: tuple[Model, dict[str, np.ndarray]]) -> None:
    m, data = onnx_model
    held_out = tiny_bert.tokens(64, seed=9)
    plain = m.compress("int8", data=data, repeats=0, smooth=False, static=False, min_cosine=1.0, exclude=[])
    smoothed = m.compress("int8", data=data, repeats=0, smooth=0.65, static=False, min_cosine=1.0, exclude=[])
    worst = {
        name: min(float(d.min_cosine or 0.0) for d in compare_outputs(m.predict(held_out), q.predict(held_out)))
        for name, q in (("plain", plain), ("smoothed", smoothed))
    }
    assert worst["smoothed"] > worst["plain"] + 0.002, worst
    recipes = [r.recipe for r in smoothed.report.recipes]
    assert "int8 per-channel, smoothed (alpha 0.65), all layers" in recipes
    assert smoothed.report.settings["smoothed"] and smoothed.report.settings["smooth_alpha"] == 0.65


def test_outlier_channels_split_off_stay_float_and_exact(onnx_model: tuple[Model, dict[str, np.ndarray]]) -> None:
    m, data = onnx_model
    proto = onnx.load_model_from_string(m.backend.model_bytes)  # type: ignore[attr-defined]
    ranges = input_ranges(proto, data)
    split, _ = smooth(proto, ranges, alpha=0.65, float_channels=2, min_outlier=5.0)
    parts = [n for n in split.graph.node if n.name.endswith(FLOAT_PART)]
    skewed = [a for a, nodes in smoothable(proto).items() if outlier_ratio(ranges[a]) >= 5.0 and len(nodes) == 1]
    assert parts and len(parts) == len([a for a in skewed if smoothable(proto)[a][0].op_type == "MatMul"])
    out = Model.load(split.SerializeToString(), backend="onnx", schema=m.schema).predict(data)["output"]
    np.testing.assert_allclose(out, m.predict(data)["output"], rtol=1e-4, atol=1e-4)
    q = m.compress("int8", data=data, repeats=0, smooth=0.65, static=False, min_cosine=1.0, exclude=[])
    names = [r.recipe for r in q.report.recipes]
    assert "int8 per-channel, smoothed (alpha 0.65, 4 outlier channels float), all layers" in names
    chosen = onnx.load_model_from_string(q.backend.model_bytes)  # type: ignore[attr-defined]
    if "outlier channels" in q.report.settings["recipe"]:  # the split-off products were left float by the quantizer
        kept = [n for n in chosen.graph.node if n.name.endswith(FLOAT_PART)]
        assert kept and all(n.op_type == "MatMul" for n in kept)
