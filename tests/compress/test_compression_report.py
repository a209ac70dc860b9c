"""The report's arithmetic on hand-made arrays, and its text and HTML views."""

from __future__ import annotations

import numpy as np
import pytest

from aimass.compress.report import Latency, Report
from aimass.measure import Drift, batch_of, compare_outputs


def test_compare_outputs_on_known_values() -> None:
    before = {
        "scores": np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32),
        "label": np.array([0, 1, 1], np.int64),
    }
    after = {
        "scores": np.array([[1.0, 1.0], [0.0, 2.0], [0.0, 0.0]], np.float32),
        "label": np.array([0, 1, 0], np.int64),
        "extra": np.zeros(3, np.float32),
    }
    scores, label = compare_outputs(before, after, atol=0.1, rtol=0.5)
    assert scores.max_abs_error == 1.0 and scores.mean_abs_error == pytest.approx(1 / 6)
    # Rows: cos 45 degrees, identical, zero vs zero (identical).
    assert scores.cosine == pytest.approx((np.sqrt(0.5) + 1 + 1) / 3)
    assert scores.min_cosine == pytest.approx(np.sqrt(0.5))
    assert scores.top1_agreement == 1.0  # argmax ties resolve to the first column in both
    assert scores.tolerance == pytest.approx(0.1 + 0.5 * 2.0) and scores.passed
    assert label.top1_agreement == pytest.approx(2 / 3) and label.tolerance == 0.0 and not label.passed
    with pytest.raises(ValueError, match="shape"):
        compare_outputs({"a": np.zeros((2, 3))}, {"a": np.zeros((3, 2))})


def test_derived_figures_and_views() -> None:
    r = Report(
        operation="compress",
        method="int8",
        backend_before="onnx",
        backend_after="onnx",
        size_before=4 << 20,
        size_after=1 << 20,
        latency=[Latency(batch=1, before_ms=2.0, after_ms=1.0, repeats=5)],
        drift=[Drift(output="y", max_abs_error=0.25, mean_abs_error=0.01, cosine=0.995, min_cosine=0.99)],
        metric="mse",
        metric_before=0.5,
        metric_after=0.75,
        higher_is_better=False,
        settings={"per_channel": True},
        notes=["<b>escaped</b>"],
    )
    assert r.size_ratio == 4.0 and r.latency_at(1).speedup == 2.0 and r.latency_at(32) is None
    assert r.metric_drop == pytest.approx(0.25)  # mse went up: worse by 0.25
    assert r.max_abs_error == 0.25 and r.cosine == 0.995
    text = str(r)
    assert "4.00 MiB -> 1.00 MiB (4.00x smaller)" in text and "2.00x faster" in text
    assert "mse 0.5 -> 0.75 (drop +0.25)" in text and "per_channel=True" in text
    page = r._repr_html_()
    assert page.startswith("<div>") and "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped</b>" not in page


def test_batch_of_repeats_rows() -> None:
    x = {"x": np.arange(6).reshape(3, 2)}
    assert batch_of(x, 2)["x"].tolist() == [[0, 1], [2, 3]]
    assert batch_of(x, 5)["x"][:, 0].tolist() == [0, 2, 4, 0, 2]
