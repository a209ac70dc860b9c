"""scikit-learn as a framework folder: estimators, pipelines, skops files, ONNX export and partial_fit updates."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skops")

from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from aimass import Model, SchemaError
from aimass.backends import detect
from aimass.errors import ModelLoadError, UnsupportedOperation
from aimass.frameworks.sklearn.backend import SklearnBackend

NAMES = ["a", "b", "c"]


class Doubler(RegressorMixin, BaseEstimator):
    """A custom estimator: its type is unknown to skops, so its files need options={"trusted": [...]}."""

    def fit(self, x: Any, y: Any) -> Doubler:
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(x).sum(axis=1) * 2.0


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return models.dataset(128)


def _logreg(x: np.ndarray, y: np.ndarray) -> Any:
    return LogisticRegression(max_iter=500).fit(x, y)


def test_logistic_regression_outputs_equal_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    est = _logreg(x, y)
    m = Model.load(est)
    assert m.backend_name == "sklearn"
    assert str(m.schema) == "(input: FP32 [-1, 4]) -> (label: INT64 [-1], probabilities: FP32 [-1, 3])"
    out = m.predict(x[:20])
    np.testing.assert_array_equal(out["label"], est.predict(x[:20]))
    np.testing.assert_allclose(out["probabilities"], est.predict_proba(x[:20]).astype(np.float32))
    assert out["label"].dtype == np.int64 and out["probabilities"].dtype == np.float32


def test_string_classes_give_label_indices(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    est = RandomForestClassifier(n_estimators=8, random_state=0).fit(x, np.array(NAMES)[y])
    m = Model.load(est)
    backend = m.backend
    assert isinstance(backend, SklearnBackend) and backend.label_is_index
    out = m.predict(x[:30])
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(backend.classes[out["label"]], est.predict(x[:30]))  # type: ignore[index]
    np.testing.assert_allclose(out["probabilities"], est.predict_proba(x[:30]).astype(np.float32))


def test_integral_float_classes_are_label_values(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    est = _logreg(x, y.astype(np.float64) * 10)
    out = Model.load(est).predict(x[:10])
    np.testing.assert_array_equal(out["label"], est.predict(x[:10]).astype(np.int64))


def test_regressors_give_prediction(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    single = Ridge().fit(x, x[:, 0] * 2 + 1)
    m = Model.load(single)
    assert m.schema.output_names == ["prediction"] and m.schema.outputs[0].shape == [-1]
    np.testing.assert_allclose(m.predict(x[:9])["prediction"], single.predict(x[:9]).astype(np.float32))
    multi = Ridge().fit(x, x[:, :2])
    mm = Model.load(multi)
    assert mm.schema.outputs[0].shape == [-1, 2]
    np.testing.assert_allclose(mm.predict(x[:9])["prediction"], multi.predict(x[:9]).astype(np.float32))


def test_pipeline_is_judged_by_its_final_step(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x * 5 + 3, y)
    m = Model.load(pipe)
    out = m.predict(x[:16] * 5 + 3)
    np.testing.assert_array_equal(out["label"], pipe.predict(x[:16] * 5 + 3))
    np.testing.assert_allclose(out["probabilities"], pipe.predict_proba(x[:16] * 5 + 3).astype(np.float32))


def test_classifier_without_predict_proba_gives_label_only(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    est = LinearSVC().fit(x, y)
    m = Model.load(est)
    assert m.schema.output_names == ["label"]
    np.testing.assert_array_equal(m.predict(x[:12])["label"], est.predict(x[:12]))


def test_dataframe_columns_are_matched_by_name(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    x, y = data
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    est = _logreg(frame, y)
    m = Model.load(est)
    want = est.predict_proba(frame[:10]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        shuffled = frame[["f3", "f1", "f0", "f2"]][:10]
        np.testing.assert_allclose(m.predict(shuffled)["probabilities"], want)
        np.testing.assert_allclose(m.predict(x[:10])["probabilities"], want)  # arrays: feature_names_in_ order
        np.testing.assert_allclose(m.predict_batch(shuffled, batch_size=3)["probabilities"], want)
    with pytest.raises(SchemaError, match=r"lacks columns \['f2'\]"):
        m.predict(frame[["f0", "f1", "f3"]])
    with pytest.raises(SchemaError, match="unexpected"):
        m.predict(frame.assign(extra=1.0))
    # Saved and loaded back, the model still matches columns by name.
    loaded = Model.load(m.save(tmp_path / "pkg"))
    np.testing.assert_allclose(loaded.predict(shuffled)["probabilities"], want)


def test_save_load_round_trip_writes_skops(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = data
    m = Model.load(RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.array(NAMES)[y]))
    path = m.save(tmp_path / "pkg")
    assert sorted(p.name for p in path.iterdir()) == ["aimass.json", "model.skops"]
    loaded = Model.load(path)
    assert loaded.backend_name == "sklearn" and loaded.schema == m.schema
    for k, v in m.predict(x).items():
        np.testing.assert_array_equal(loaded.predict(x)[k], v)
    # A bare .skops file is detected by its suffix.
    assert detect(path / "model.skops") is SklearnBackend
    np.testing.assert_array_equal(Model.load(path / "model.skops").predict(x)["label"], m.predict(x)["label"])


def test_untrusted_type_is_refused_unless_trusted(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = data
    m = Model.load(Doubler().fit(x, y))
    path = m.save(tmp_path / "pkg")
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(ModelLoadError, match=r"not trusted: \[.*Doubler.*\]"):
        Model.load(path)
    with pytest.raises(ModelLoadError, match="not trusted"):
        Model.load(path / "model.skops", options={"trusted": ["something.Else"]})
    loaded = Model.load(path, options={"trusted": [name]})
    np.testing.assert_allclose(loaded.predict(x[:4])["prediction"], (x[:4].sum(axis=1) * 2).astype(np.float32))


def test_corrupt_skops_file_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "bad.skops").write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="skops could not read"):
        Model.load(tmp_path / "bad.skops")


@pytest.mark.parametrize("kind", ["logreg", "strings", "ridge", "linearsvc", "pipeline"])
def test_convert_to_onnx_is_checked_numerically(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    x, y = data
    est = {
        "logreg": lambda: _logreg(x, y),
        "strings": lambda: RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.array(NAMES)[y]),
        "ridge": lambda: Ridge().fit(x, x[:, 0] - x[:, 1]),
        "linearsvc": lambda: LinearSVC().fit(x, y),
        "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
    }[kind]()
    source = Model.load(est)
    onnx_model = source.convert("onnx", data=x, repeats=0)
    assert onnx_model.backend_name == "onnx"
    assert onnx_model.schema.output_names == source.schema.output_names
    assert onnx_model.report.max_abs_error <= 1e-4
    got, want = onnx_model.predict(x), source.predict(x)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        np.testing.assert_allclose(got[k], v, atol=1e-5, err_msg=k)


def test_update_partial_fit_returns_new_model(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    est = SGDClassifier(random_state=0, max_iter=5, tol=None).fit(x[:32], y[:32])
    m = Model.load(est)
    before = {k: v.copy() for k, v in m.predict(x).items()}
    coef = m.backend.estimator.coef_.copy()  # type: ignore[attr-defined]
    m2 = m.update(x[32:], y[32:], epochs=2)
    assert m2.backend_name == "sklearn" and m2.schema == m.schema
    assert not np.array_equal(m2.backend.estimator.coef_, coef)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(m.backend.estimator.coef_, coef)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(m.predict(x)["label"], before["label"])
    assert m2.metadata["updates"] == [{"rows": 96, "backend": "sklearn"}]
    assert est.coef_ is not m.backend.estimator.coef_  # type: ignore[attr-defined]


def test_update_without_partial_fit_names_the_estimator(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    with pytest.raises(UnsupportedOperation, match="LogisticRegression has none"):
        Model.load(_logreg(x, y)).update(x, y)
    pipe = make_pipeline(StandardScaler(), SGDClassifier()).fit(x, y)
    with pytest.raises(UnsupportedOperation, match=r"Pipeline \(final step SGDClassifier\) has none"):
        Model.load(pipe).update(x, y)


def test_loading_copies_the_estimator(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    est = Ridge().fit(x, x[:, 0])
    m = Model.load(est)
    before = m.predict(x[:5])["prediction"].copy()
    est.fit(x, x[:, 1])  # retraining the caller's object
    np.testing.assert_array_equal(m.predict(x[:5])["prediction"], before)


def test_unfitted_and_predictless_estimators_are_refused(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    with pytest.raises(ModelLoadError, match="not fitted"):
        Model.load(LogisticRegression())
    with pytest.raises(ModelLoadError, match="StandardScaler has none"):
        Model.load(StandardScaler().fit(x))


def test_xgboost_sklearn_api_stays_on_xgboost() -> None:
    xgb = pytest.importorskip("xgboost")
    assert detect(xgb.XGBClassifier()).name == "xgboost"


def test_import_aimass_imports_no_sklearn() -> None:
    code = (
        "import sys, aimass, aimass.update, aimass.frameworks.sklearn.backend, aimass.frameworks.sklearn.export\n"
        "from aimass.backends import detect\n"
        "assert detect('m.skops').name == 'sklearn'\n"
        "print([m for m in ('sklearn', 'skops', 'skl2onnx', 'pandas') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
