"""Monitoring of served traffic: a published model with a reference profile, normal then drifted requests.

Drifted requests must move the drift gauges on /metrics and the JSON report; normal ones must not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.protocol import v2
from aimass.server import create_app
from aimass.store import Store


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    model = Model.load(models.onnx_mlp(root / "mlp.onnx"))
    x_train, _ = models.dataset(2000, seed=0)
    Store(root / "store").publish(model, "mlp", reference=x_train)
    Store(root / "store").publish(model, "plain")  # no profile: not monitored under "auto"
    return root / "store"


@pytest.fixture(scope="module")
def client(library: Path) -> Iterator[httpx.Client]:
    app = create_app(repository=library, max_batch_size=8)
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as c:
        yield c


def _send(client: httpx.Client, x: np.ndarray, model: str = "mlp") -> None:
    body, headers = v2.encode_request({"x": x})
    r = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text


def _psi(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        s.labels["feature"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "aimass_input_drift_psi" and s.labels["model"] == "mlp" and s.labels["version"] == "1"
    }


def test_normal_traffic_keeps_the_gauges_low_drifted_traffic_moves_them(client: httpx.Client) -> None:
    x, _ = models.dataset(1200, seed=7)  # the training distribution, other rows
    for rows in np.array_split(x, 300):
        _send(client, rows)
    normal = _psi(client)
    assert set(normal) == {"x[0]", "x[1]", "x[2]", "x[3]"}
    assert max(normal.values()) < 0.1, normal
    report = client.get("/v2/models/mlp/versions/1/monitor").json()
    assert report["requests"] == 300 and report["drifted"] == [] and report["window_rows"] == 1000
    assert set(report["outputs"]) == {"y[0]", "y[1]", "y[2]"} and report["latency_p50_ms"] > 0

    drifted = x.copy()
    drifted[:, 2] += 3.0  # one feature moves
    for rows in np.array_split(drifted, 300):
        _send(client, rows)
    after = _psi(client)
    assert after["x[2]"] > 1.0, after
    assert max(after["x[0]"], after["x[1]"], after["x[3]"]) < 0.1, after
    report = client.get("/v2/models/mlp/monitor").json()  # no version: the highest
    assert report["drifted"] == ["x[2]"] and report["requests"] == 600


def test_errors_are_counted_and_unprofiled_models_are_not_monitored(client: httpx.Client) -> None:
    before = client.get("/v2/models/mlp/versions/1/monitor").json()["errors"]
    body, headers = v2.encode_request({"x": np.zeros((1, 5), np.float32)})  # wrong width: 400
    assert client.post("/v2/models/mlp/infer", content=body, headers=headers).status_code == 400
    assert client.get("/v2/models/mlp/versions/1/monitor").json()["errors"] == before + 1
    _send(client, np.zeros((1, 4), np.float32), model="plain")
    r = client.get("/v2/models/plain/versions/1/monitor")
    assert r.status_code == 404 and "reference profile" in r.json()["error"]
    text = client.get("/metrics").text
    assert 'aimass_output_quantile{feature="y[0]",model="mlp",quantile="0.5",version="1"}' in text
    assert 'model="plain"' not in text.split("aimass_monitor_requests_total")[1].split("# HELP")[0]
