"""Conversion without data=: checked on the load-time example (kept in packages), never failed by generated rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_bert

from aimass import ConversionError, Model
from aimass.package import verify
from aimass.schema import Schema, TensorSpec

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def encoder() -> Model:
    return Model.load(tiny_bert.encoder(), example_input=tiny_bert.tokens(2, seed=1))


@pytest.fixture(scope="module")
def converted(encoder: Model) -> Model:
    return encoder.convert("onnx", repeats=0)


def test_conversion_without_data_checks_on_the_example(encoder: Model, converted: Model) -> None:
    r = converted.report
    assert r.data == "example" and r.samples == 4  # the two example rows, then a copy of them
    assert "load-time example (2 given" in r.data_detail and "load-time example" in r.text()
    assert r.drift[0].passed and r.max_abs_error < 1e-4
    assert any("rows generated within the example's ranges" in n for n in r.notes)
    fresh = tiny_bert.tokens(5, seed=7)  # real-looking inputs the check never saw
    np.testing.assert_allclose(converted.predict(fresh)["output"], encoder.predict(fresh)["output"], atol=1e-4)
    for name, value in encoder.example.items():
        np.testing.assert_array_equal(converted.example[name], value)


def test_the_example_travels_in_the_package(converted: Model, tmp_path: Path) -> None:
    pkg = converted.save(tmp_path / "pkg")
    manifest = verify(pkg)
    assert manifest.example == "example.npz" and "example.npz" in [a.path for a in manifest.artifacts]
    reloaded = Model.load(pkg)
    assert reloaded.example is not None
    for name, value in converted.example.items():
        np.testing.assert_array_equal(reloaded.example[name], value)
    q = reloaded.compress("int8", repeats=0)
    assert q.report.data == "example" and "load-time example" in q.report.data_detail
    assert q.example is not None


def test_optimize_fuses_attention_and_reports_both_baselines(encoder: Model) -> None:
    import onnx

    fused = encoder.convert("onnx", optimize=True, repeats=2)
    ops = {n.op_type for n in onnx.load_model_from_string(fused.backend.model_bytes).graph.node}
    assert {"Attention", "LayerNormalization"} <= ops and "SkipLayerNormalization" not in ops  # slower on the CPU
    assert "Attention" in fused.report.settings["fused"] and fused.report.settings["num_heads"] == 2
    assert fused.report.drift[0].passed
    assert any(n.startswith("fp32 baselines, plain export -> fused: b=1") for n in fused.report.notes)
    x = tiny_bert.tokens(6, seed=3)
    np.testing.assert_allclose(fused.predict(x)["output"], encoder.predict(x)["output"], atol=1e-4)


class _NoisyIds(torch.nn.Module):
    """Token ids in, ids plus fresh noise out: torch and onnxruntime always disagree."""

    def forward(self, ids: Any) -> Any:
        return ids.float() + torch.rand(ids.shape)


def test_generated_rows_alone_never_fail_a_conversion() -> None:
    ids = np.array([[2, 17, 40, 0], [2, 9, 0, 0]], dtype=np.int64)
    schema = Schema(inputs=[TensorSpec(name="ids", dtype="INT64", shape=[-1, 4])])
    no_example = Model.load(_NoisyIds(), schema=schema)
    with pytest.warns(UserWarning, match="outside its domain"):
        o = no_example.convert("onnx", repeats=0, dynamo=False)
    assert o.report.data == "generated" and not o.report.drift[0].passed
    assert any("Pass data=" in n for n in o.report.notes)
    # The user's own example, or data=, are inputs the model is made for: a difference there fails.
    with pytest.raises(ConversionError, match="differ from the source"):
        Model.load(_NoisyIds(), example_input={"ids": ids}).convert("onnx", repeats=0, dynamo=False)
    with pytest.raises(ConversionError, match="differ from the source"):
        no_example.convert("onnx", data={"ids": ids}, repeats=0, dynamo=False)


def test_generated_rows_stay_in_what_the_example_shows() -> None:
    from aimass.measure import example_rows, generated_rows

    example = tiny_bert.tokens(3, seed=5)
    schema = Schema(
        inputs=[TensorSpec(name=k, dtype="INT64", shape=[-1, 12]) for k in example]
        + [TensorSpec(name="scale", dtype="FP32", shape=[-1, 2])]
    )
    example["scale"] = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    rows = generated_rows(schema, 50, example=example)
    ids, mask = rows["input_ids"], rows["attention_mask"]
    assert ids.shape == (50, 12) and ids.min() >= example["input_ids"].min() and ids.max() <= example["input_ids"].max()
    assert set(np.unique(mask)) <= {0, 1}
    assert all(any(np.array_equal(m, e) for e in example["attention_mask"]) for m in mask)  # whole example masks
    assert set(np.unique(rows["token_type_ids"])) == {0}
    shown = example_rows(schema, example)
    assert len(shown["input_ids"]) == 6 and np.array_equal(shown["input_ids"][3:], example["input_ids"])
    assert not np.array_equal(shown["scale"][3:], example["scale"])  # floats varied...
    np.testing.assert_allclose(shown["scale"][3:], example["scale"], atol=0.2)  # ...by 1% of their spread
