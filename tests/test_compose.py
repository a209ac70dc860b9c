"""Pipelines and ensembles: results checked against running the parts by hand; one package; publishable."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model, compose
from aimass.errors import SchemaError
from aimass.store import Store


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    tmp = tmp_path_factory.mktemp("parts")
    x, _ = models.dataset(8)
    return {
        "a": Model.load(models.xgb_classifier(3)),
        "b": Model.load(models.xgb_classifier(20)),
        "torch": Model.load(models.torch_mlp(), example_input={"x": x}),
        "onnx4": Model.load(models.onnx_mlp(tmp / "m.onnx", outputs=4)),  # x -> y, FP32 [-1, 4]
    }


def test_mean_and_weighted_ensembles(parts: dict[str, Model]) -> None:
    x, _ = models.dataset(32)
    a, b = parts["a"], parts["b"]
    pa, pb = a.predict(x)["probabilities"], b.predict(x)["probabilities"]
    mean = compose.ensemble(a, b)
    assert mean.backend_name == "compose" and mean.schema.output_names == ["label", "probabilities"]
    out = mean.predict(x)
    np.testing.assert_allclose(out["probabilities"], (pa + pb) / 2, rtol=1e-6)
    np.testing.assert_array_equal(out["label"], ((pa + pb) / 2).argmax(axis=1))
    weighted = compose.ensemble(a, b, method="weighted", weights=[0.25, 0.75]).predict(x)
    np.testing.assert_allclose(weighted["probabilities"], 0.25 * pa + 0.75 * pb, rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        compose.ensemble(a, b, method="weighted")


def test_vote_over_different_frameworks(parts: dict[str, Model]) -> None:
    x, _ = models.dataset(64, seed=5)
    a, b, t = parts["a"], parts["b"], parts["torch"]
    voted = compose.ensemble(a, b, t, method="vote")  # input names differ ('input' vs 'x'): one-input parts
    labels = np.stack([a.predict(x)["label"], b.predict(x)["label"], t.predict(x)["output"].argmax(axis=1)], axis=1)
    want = np.array([np.bincount(row, minlength=3).argmax() for row in labels])
    np.testing.assert_array_equal(voted.predict(x)["label"], want)


def test_pipeline_feeds_outputs_into_inputs(parts: dict[str, Model]) -> None:
    x, _ = models.dataset(16)
    first, second = parts["onnx4"], parts["a"]
    chain = compose.pipeline(first, second)  # one output 'y' feeds one input 'input'
    assert chain.schema.input_names == ["x"] and chain.schema.output_names == ["label", "probabilities"]
    want = second.predict(first.predict(x)["y"])
    got = chain.predict(x)
    np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
    explicit = compose.pipeline(first, second, connect=[{}, {"input": "y"}])
    np.testing.assert_array_equal(explicit.predict(x)["label"], want["label"])
    with pytest.raises(SchemaError, match="no earlier step produces"):
        compose.pipeline(first, second, connect=[{}, {"input": "nope"}])
    with pytest.raises(SchemaError):
        chain.predict(np.zeros((2, 3), np.float32))  # the composed schema validates like any Model's


def test_composed_models_save_load_and_publish(parts: dict[str, Model], tmp_path: Path) -> None:
    x, _ = models.dataset(16)
    nested = compose.ensemble(compose.pipeline(parts["onnx4"], parts["a"]), parts["b"], name="nested")
    want = nested.predict(x)
    nested.save(tmp_path / "pkg")
    assert (tmp_path / "pkg" / "compose.json").is_file()
    loaded = Model.load(tmp_path / "pkg")
    for k in want:
        np.testing.assert_allclose(loaded.predict(x)[k], want[k], rtol=1e-6)
    lib = Store(tmp_path / "lib")
    v = lib.publish(nested, "combo")
    from_store = lib.load("combo", v)
    np.testing.assert_allclose(from_store.predict(x)["probabilities"], want["probabilities"], rtol=1e-6)
    # every part's file is covered by the package's checksums
    artifact = next((tmp_path / "pkg" / "parts").rglob("model.ubj"))
    artifact.write_bytes(artifact.read_bytes()[:-8])
    from aimass.errors import IntegrityError

    with pytest.raises(IntegrityError):
        Model.load(tmp_path / "pkg")
