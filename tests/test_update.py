"""model.update(): continued boosting and fine-tuning from the current weights, on real frameworks."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.errors import SchemaError, UnsupportedOperation
from aimass.evaluate import evaluate


def _shifted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """New data whose label rule moved: the class boundary on feature 0 is at 1.0 instead of 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, models.N_FEATURES)).astype(np.float32)
    y = (x[:, 0] > 1.0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def test_xgboost_continues_boosting() -> None:
    m = Model.load(models.xgb_classifier(5))
    x_new, y_new = _shifted(600, 1)
    x_test, y_test = _shifted(400, 2)
    before = evaluate(m, x_test, y_test, metrics=["accuracy"])["accuracy"]
    m2 = m.update(x_new, y_new, rounds=20)
    assert m2 is not m and m2.backend_name == "xgboost"
    assert m2.backend.booster.num_boosted_rounds() == 25  # type: ignore[attr-defined]
    assert m.backend.booster.num_boosted_rounds() == 5  # type: ignore[attr-defined]  # original untouched
    after = evaluate(m2, x_test, y_test, metrics=["accuracy"])["accuracy"]
    assert after > before + 0.05
    assert m2.metadata["updates"] == [{"rows": 600, "backend": "xgboost"}]


def test_torch_fine_tunes_and_saves(tmp_path: Path) -> None:
    x, _ = models.dataset(8)
    net = models.torch_mlp()
    m = Model.load(net, example_input={"x": x})
    x_new, y_new = _shifted(512, 3)
    x_test, y_test = _shifted(400, 4)
    before = evaluate(m, x_test, y_test, metrics=["log_loss"])["log_loss"]
    weights_before = net.fc1.weight.detach().clone()
    m2 = m.update(x_new, y_new, epochs=15, learning_rate=0.01, progress=False)
    after = evaluate(m2, x_test, y_test, metrics=["log_loss"])["log_loss"]
    assert after < before
    assert (net.fc1.weight.detach() == weights_before).all()  # the original module is not trained
    m2.save(tmp_path / "pkg")
    reloaded = Model.load(tmp_path / "pkg")
    np.testing.assert_allclose(reloaded.predict(x_test)["output"], m2.predict(x_test)["output"], atol=1e-5)


def test_torch_regression_uses_mse() -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 1))
    x, _ = models.dataset(256)
    target = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)).reshape(-1, 1)
    m = Model.load(net, example_input={"input": x[:4]})
    m2 = m.update(x, target, epochs=30, learning_rate=0.05, progress=False)
    mse = lambda model: float(np.mean((model.predict(x)["output"] - target) ** 2))  # noqa: E731
    assert mse(m2) < mse(m) / 2


def test_keras_fine_tunes() -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.dataset(256)
    model.fit(x, y, epochs=3, verbose=0)
    m = Model.load(model, example_input=x[:4])
    assert m.backend_name == "keras"
    x_new, y_new = _shifted(512, 5)
    before = evaluate(m, x_new, y_new, metrics=["log_loss"])["log_loss"]
    m2 = m.update(x_new, y_new, epochs=10, learning_rate=0.01, progress=False)
    assert evaluate(m2, x_new, y_new, metrics=["log_loss"])["log_loss"] < before


def test_update_refuses_bad_input(tmp_path: Path) -> None:
    m = Model.load(models.xgb_classifier(3))
    x, y = models.dataset(20)
    with pytest.raises(SchemaError, match="20 input rows but 5 labels"):
        m.update(x, y[:5])
    onnx = Model.load(models.onnx_mlp(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedOperation, match="onnx"):
        onnx.update(x, y)
