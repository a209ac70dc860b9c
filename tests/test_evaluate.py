"""evaluate(): metrics checked against scikit-learn computed independently, speed metrics, gates."""

from __future__ import annotations

import math

import models
import numpy as np
import pytest
from sklearn import metrics as skm

from aimass import Model
from aimass.errors import BackendNotFound, GateFailed, SchemaError, StoreError
from aimass.evaluate import Evaluation, check_gate, evaluate, parse_gate, require_gate


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return models.dataset(300, seed=3)


def test_a_framework_object_is_loaded_first(data: tuple[np.ndarray, np.ndarray]) -> None:
    """docs/library.md calls evaluate on the raw estimator; an object no backend takes is a typed error."""
    x, y = data
    clf = models.xgb_classifier(5)
    raw = evaluate(clf, x, y, metrics=["accuracy"])
    assert raw["accuracy"] == pytest.approx(skm.accuracy_score(y, clf.predict(x)))
    with pytest.raises(BackendNotFound):
        evaluate(object(), x, y, metrics=["accuracy"])


def test_multiclass_metrics_match_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    clf = models.xgb_classifier(5)
    result = evaluate(Model.load(clf), x, y, latency_calls=20)
    proba = clf.predict_proba(x)
    pred = proba.argmax(axis=1)
    assert result.task == "classification" and result.rows == 300
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert result["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert result["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-4)
    assert result["log_loss"] == pytest.approx(skm.log_loss(y, proba), abs=1e-4)
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["throughput_rps"] > 0


def test_binary_metrics_and_logits_from_torch(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    yb = (y > 0).astype(np.int64)
    result = evaluate(Model.load(models.xgb_binary()), x, yb, metrics=["accuracy", "recall", "roc_auc"])
    assert list(result.metrics) == ["accuracy", "recall", "roc_auc"]
    assert result["roc_auc"] > 0.9
    # A torch MLP outputs logits: probabilities come from a softmax.
    net = models.torch_mlp()
    m = Model.load(net, example_input={"x": x[:4]})
    res = evaluate(m, x, y, metrics=["accuracy", "log_loss"])
    import torch

    logits = net(torch.from_numpy(x)).detach().numpy()
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    assert res["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-4)
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, logits.argmax(axis=1)))


def test_regression_metrics(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    reg = models.xgb_regressor()
    target = x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    result = evaluate(Model.load(reg), x, target, metrics=["mse", "mae", "r2"])
    pred = reg.predict(x)
    assert result.task == "regression"
    assert result["mse"] == pytest.approx(skm.mean_squared_error(target, pred), rel=1e-5)
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(target, pred), rel=1e-5)
    assert result["r2"] == pytest.approx(skm.r2_score(target, pred), rel=1e-5)


def test_bad_arguments_are_refused(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    m = Model.load(models.xgb_classifier(3))
    with pytest.raises(ValueError, match="unknown classification metrics"):
        evaluate(m, x, y, metrics=["mse"])
    with pytest.raises(SchemaError, match="predictions for"):
        evaluate(m, x, y[:10], metrics=["accuracy"])
    with pytest.raises(SchemaError):
        evaluate(m, x[:, :3], y, metrics=["accuracy"])


def test_gates() -> None:
    assert parse_gate({"accuracy": ">=0.9", "p": 0.5}) == [("accuracy", ">=", 0.9), ("p", ">=", 0.5)]
    assert check_gate({"accuracy": 0.95, "latency_p99_ms": 3.0}, {"accuracy": ">=0.9", "latency_p99_ms": "<5"}) == []
    assert check_gate({"accuracy": math.nan}, {"accuracy": ">0"}) == ["accuracy nan is not > 0"]
    with pytest.raises(StoreError, match="condition"):
        parse_gate({"accuracy": "at least 0.9"})
    with pytest.raises(GateFailed) as info:
        require_gate({"accuracy": 0.8}, {"accuracy": ">=0.9"}, what="v3")
    assert info.value.status_code == 409 and info.value.failures == ["accuracy 0.8 is not >= 0.9"]
    result = Evaluation(task="classification", rows=10, metrics={"accuracy": 0.8})
    assert result.check({"accuracy": ">=0.9"}) == ["accuracy 0.8 is not >= 0.9"]
    assert "<td>accuracy</td>" in result._repr_html_() and "accuracy" in str(result)
    assert result.to_dict() == {"task": "classification", "rows": 10, "metrics": {"accuracy": 0.8}}
