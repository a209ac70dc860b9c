"""Payload logs: requests and answers to Parquet in the background, read back as arrays; sampling,
a masking hook, a bounded queue that drops and counts, files complete or absent."""

from __future__ import annotations

from pathlib import Path

import httpx
import models
import numpy as np
import pytest

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.evaluate import evaluate
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.payload_log import PayloadLog, PayloadRecord, read_payloads


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("plog") / "mlp.onnx"))


def test_logged_requests_read_back_and_evaluate(tmp_path: Path, mlp: Model) -> None:
    logs = tmp_path / "logs"
    app = create_app({"mlp": mlp}, log_payloads=str(logs), max_batch_size=8)
    x, y = models.dataset(120, seed=3)
    ids = []
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as client:
        for i, rows in enumerate(np.array_split(x, 40)):
            body, headers = v2.encode_request({"x": rows}, request_id=f"r{i}" if i % 2 else None)
            r = client.post("/v2/models/mlp/infer", content=body, headers=headers)
            assert r.status_code == 200
            ids.append(v2.decode_response(r.content).id)  # generated when the client sent none
    assert app.payload_log is not None
    app.payload_log.close()
    assert all(ids) and ids[1] == "r1"
    logged = read_payloads(logs, model="mlp")
    assert len(logged) == 120 and set(logged.versions) == {"1"}
    order = np.argsort([ids.index(i) for i in logged.request_ids], kind="stable")
    np.testing.assert_array_equal(logged.inputs["x"][order], x)
    np.testing.assert_allclose(logged.outputs["y"][order], mlp.predict(x)["y"], rtol=1e-6)
    assert (logged.latencies > 0).all()
    assert not list(logs.rglob(".*"))  # no file left half-written
    # Labelled, the log is evaluation data as it stands.
    result = evaluate(mlp, logged.inputs["x"][order], y, latency_calls=0)
    assert result.rows == 120


def test_grpc_requests_are_logged_like_http_ones(tmp_path: Path, mlp: Model) -> None:
    pytest.importorskip("grpc")
    from aimass.server.grpc import BackgroundServer

    logs = tmp_path / "logs"
    app = create_app({"mlp": mlp}, log_payloads=str(logs), max_batch_size=8)
    server = BackgroundServer(app)
    try:
        remote = Model.load(f"grpc://{server.target}/mlp")
        x, _ = models.dataset(6, seed=4)
        got = remote.predict(x)["y"]
    finally:
        server.stop()
    assert app.payload_log is not None
    app.payload_log.close()
    logged = read_payloads(logs, model="mlp")
    np.testing.assert_array_equal(logged.inputs["x"], x)
    np.testing.assert_array_equal(logged.outputs["y"], got)


def test_sampling_hook_and_bounded_queue(tmp_path: Path, mlp: Model) -> None:
    def mask(record: PayloadRecord) -> PayloadRecord | None:
        if record.request_id == "secret":
            return None  # dropped entirely
        record.inputs = {"x": np.zeros_like(record.inputs["x"])}  # masked
        return record

    plog = PayloadLog(tmp_path / "masked", hook=mask)
    app = create_app({"mlp": mlp}, log_payloads=plog)
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as client:
        for rid in ("a", "secret", "b"):
            body, headers = v2.encode_request({"x": np.ones((2, 4), np.float32)}, request_id=rid)
            assert client.post("/v2/models/mlp/infer", content=body, headers=headers).status_code == 200
    plog.close()
    logged = read_payloads(tmp_path / "masked", model="mlp")
    assert sorted(set(logged.request_ids)) == ["a", "b"] and not logged.inputs["x"].any()
    assert b"aimass_payload_log_records_total 2.0" in app.metrics.render()[0]

    assert PayloadLog(tmp_path / "none", sample_rate=0.0).sampled() is False
    full = PayloadLog(tmp_path / "full", max_queue=1, flush_seconds=5.0)
    out = {"y": np.zeros((1, 3), np.float32)}
    for i in range(50):  # far faster than one flush: the queue of one fills and the rest are dropped
        full.log("mlp", "1", str(i), {"x": np.zeros((1, 4), np.float32)}, out, 0.001)
    assert full.dropped >= 40 and full.logged + full.dropped == 50
    full.close()
    with pytest.raises(ValueError, match="sample_rate"):
        PayloadLog(tmp_path / "bad", sample_rate=1.5)
