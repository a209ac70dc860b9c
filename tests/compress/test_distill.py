"""Distillation: a small student learns the teacher's outputs; report compares teacher and student."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from compress_checks import assert_drift_is_real, saved_size

from aimass import Model, UnsupportedOperation
from aimass.compress import distill

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return models.dataset(512, seed=7)


def _student(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


def test_torch_student_learns_the_teacher(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = data
    teacher = Model.load(models.torch_mlp(hidden=128), example_input={"x": x[:4]})
    student = _student()
    untrained = [p.detach().clone() for p in student.parameters()]
    s = distill(teacher, student, x, labels=y, epochs=15, learning_rate=1e-2, temperature=2.0, alpha=0.7, repeats=2)
    assert all(torch.equal(a, b) for a, b in zip(untrained, student.parameters(), strict=True))  # caller's untouched
    assert capsys.readouterr().err == ""  # no bar off a terminal: a log got 320 bar lines per distillation
    r = s.report
    assert s.schema.input_names == ["x"] and s.schema.output_names == ["output"]
    assert r.backend_before == r.backend_after == "torch"
    assert r.metric == "accuracy" and r.metric_after == float((s.predict(x)["output"].argmax(1) == y).mean())
    assert r.metric_after > 0.85
    assert r.size_after == saved_size(s, tmp_path / "s") < r.size_before == saved_size(teacher, tmp_path / "t")
    assert_drift_is_real(teacher, s, x, "output")
    before = Model.load(_student(), example_input={"input": x[:4]}).predict(x)["output"].argmax(1)
    agreement_untrained = float((before == teacher.predict(x)["output"].argmax(1)).mean())
    assert r.drift[0].top1_agreement > max(agreement_untrained, 0.85)
    assert r.settings == {"temperature": 2.0, "alpha": 0.7, "epochs": 15, "batch_size": 32, "learning_rate": 1e-2}


def test_probability_teacher_gives_probability_student(data: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("xgboost")
    x, _ = data
    teacher = Model.load(models.xgb_classifier())
    s = distill(teacher, _student(), x, epochs=10, learning_rate=1e-2, progress=False, repeats=0)
    assert s.schema.output_names == ["probabilities"]
    probs = s.predict(x)["probabilities"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert s.report.method == "distill (probabilities)"
    assert any("alpha 0.5 -> 1.0" in n for n in s.report.notes)  # no labels: soft targets only
    assert any("'label'" in n for n in s.report.notes)  # the teacher's label output has no counterpart
    assert s.report.drift[0].top1_agreement > 0.8


def test_keras_student(data: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("tensorflow")
    import keras

    x, y = data
    teacher = Model.load(models.keras_mlp(hidden=32))
    inp = keras.Input((4,), name="x")
    student = keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Dense(6, activation="relu")(inp)))
    s = distill(teacher, student, x, labels=y, epochs=8, learning_rate=1e-2, progress=False, repeats=0)
    assert s.backend_name == "keras" and s.schema.output_names == ["logits"]
    assert s.report.metric_after == float((s.predict(x)["logits"].argmax(1) == y).mean())
    assert s.report.drift[0].top1_agreement > 0.7


def test_distill_refuses_bad_arguments(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    teacher = Model.load(models.torch_mlp(), example_input={"x": x[:4]})
    with pytest.raises(ValueError, match="temperature"):
        distill(teacher, _student(), x, temperature=0)
    with pytest.raises(ValueError, match="labels has 3 rows"):
        distill(teacher, _student(), x, labels=y[:3])
    with pytest.raises(UnsupportedOperation, match="torch nn.Module or Keras"):
        distill(teacher, object(), x)


def test_lr_is_the_former_name_of_learning_rate(data: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("xgboost")
    x, _ = data
    teacher = Model.load(models.xgb_classifier())
    with pytest.warns(DeprecationWarning, match=r"distill\(lr=...\) is now distill\(learning_rate=...\)"):
        s = distill(teacher, _student(), x, epochs=1, lr=0.02, progress=False, repeats=0)
    assert s.report.settings["learning_rate"] == 0.02 and "lr" not in s.report.settings
