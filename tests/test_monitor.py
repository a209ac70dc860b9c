"""Monitoring: profiles, PSI/KS drift over a sliding window, model.monitor, Prometheus exposition."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy import stats

from aimass import Model
from aimass.errors import SchemaError
from aimass.monitor import Monitor, MonitorCollector, Profile
from aimass.schema import Schema, TensorSpec
from aimass.store import Store

SCHEMA = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 2])])


def test_psi_and_ks_separate_same_from_shifted() -> None:
    rng = np.random.default_rng(0)
    profile = Profile.from_data(SCHEMA, rng.normal(size=(5000, 2)).astype(np.float32))
    same = rng.normal(size=(2000, 2))
    shifted = same + np.array([1.0, 0.0])
    f0 = profile.features["x[0]"]
    assert f0.psi(same[:, 0]) < 0.05 and f0.ks(same[:, 0]) < 0.05
    assert f0.psi(shifted[:, 0]) > 0.5
    # KS against the percentile CDF agrees with scipy's exact two-sample statistic to ~0.02
    ref = rng.normal(size=5000)
    exact = stats.ks_2samp(ref, shifted[:, 0]).statistic
    assert f0.ks(shifted[:, 0]) == pytest.approx(exact, abs=0.03)
    assert profile.features["x[1]"].psi(shifted[:, 1]) < 0.05
    assert Profile.from_dict(profile.to_dict()) == profile


def test_window_keeps_the_latest_rows() -> None:
    rng = np.random.default_rng(1)
    mon = Monitor(SCHEMA, Profile.from_data(SCHEMA, rng.normal(size=(2000, 2))), window=300)
    for _ in range(5):
        mon.observe({"x": rng.normal(size=(100, 2)) + 3.0}, seconds=0.001)  # drifted traffic first...
    assert mon.report().drifted == ["x[0]", "x[1]"]
    for _ in range(3):
        mon.observe({"x": rng.normal(size=(100, 2))}, seconds=0.002)  # ...then it comes back
    report = mon.report()
    assert report.window_rows == 300 and report.rows_seen == 800 and report.requests == 8
    assert report.drifted == [] and report.max_psi < 0.2
    assert report.latency_p50_ms == pytest.approx(1.0) and report.latency_p99_ms == pytest.approx(2.0)


def test_model_monitor_records_predictions_and_errors(tmp_path: Path) -> None:
    x, _ = models.dataset(400)
    lib = Store(tmp_path / "lib")
    lib.publish(Model.load(models.xgb_classifier(3)), "fraud", reference=x)
    m = lib.load("fraud")
    mon = m.monitor
    assert mon is m.monitor and mon.profile is not None and mon.version == "1" and mon.name == "fraud"
    m.predict(x[:200])
    assert m.monitor.report().drifted == []
    shifted = x[:200].copy()
    shifted[:, 2] += 2.5
    m.predict_batch(shifted, batch_size=50)
    with pytest.raises(SchemaError):
        m.predict(x[:, :3])
    report = m.monitor.report()
    assert report.requests == 5 and report.errors == 1 and report.window_rows == 400
    assert "input[2]" in report.drifted and "input[0]" not in report.drifted
    assert "DRIFT" in str(report) and "<table>" in report._repr_html_()
    assert report.to_dict()["drifted"] == report.drifted


def test_prometheus_exposition() -> None:
    rng = np.random.default_rng(2)
    mon = Monitor(SCHEMA, Profile.from_data(SCHEMA, rng.normal(size=(1000, 2))), name="fraud", version="3")
    mon.observe({"x": rng.normal(size=(50, 2)) + 2}, seconds=0.003)
    mon.record_error()
    registry = CollectorRegistry()
    MonitorCollector([mon], registry=registry)
    text = generate_latest(registry).decode()
    assert 'aimass_predict_calls_total{model="fraud",version="3"} 1.0' in text
    assert 'aimass_predict_errors_total{model="fraud",version="3"} 1.0' in text
    assert 'aimass_predict_seconds_bucket{le="0.005",model="fraud",version="3"} 1.0' in text
    assert 'aimass_input_drift_psi{feature="x[0]",model="fraud",version="3"}' in text
    psi = [line for line in text.splitlines() if line.startswith('aimass_input_drift_psi{feature="x[0]"')]
    assert float(psi[0].split()[-1]) > 0.5


def test_monitoring_starts_at_first_access_and_set_reference() -> None:
    m = Model.load(models.xgb_classifier(3))
    x, _ = models.dataset(300)
    m.predict(x)  # not monitored yet: nothing is recorded, predict is unwrapped
    report = m.monitor.report()
    assert report.requests == 0 and report.features == []
    m.predict(x[:100])
    assert m.monitor.report().requests == 1 and m.monitor.report().features == []  # no profile: counts only
    m.monitor.set_reference(x)
    assert len(m.monitor.report().features) == 4


def test_report_plots() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    rng = np.random.default_rng(3)
    mon = Monitor(SCHEMA, Profile.from_data(SCHEMA, rng.normal(size=(500, 2))))
    for _ in range(4):
        mon.observe({"x": rng.normal(size=(50, 2)) + 1}, seconds=0.001 * (1 + rng.random()))
    fig = mon.report().plot()
    drift, latency = fig.axes
    assert [t.get_text() for t in drift.get_xticklabels()] == ["x[0]", "x[1]"]
    assert len(drift.patches) == 4 and len(latency.patches) == 30
