"""The ASGI app in-process: every endpoint, the error table case by case (server healthy after each),
auth, body limit, repository layout and extension, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import models
import numpy as np
import orjson
import pytest
import serving

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.protocol import v2
from aimass.server import create_app


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, mlp: Model) -> Path:
    root = tmp_path_factory.mktemp("repo")
    mlp.save(root / "mlp" / "1")
    Model.load(models.onnx_mlp(root / "m2.onnx", seed=1)).save(root / "mlp" / "2")
    Model.load(serving.onnx_reshape_fails(root / "f.onnx")).save(root / "fails" / "1")
    Model.load(models.onnx_two_inputs(root / "two.onnx")).save(root / "two")  # flat: served as version 1
    (root / "notes").mkdir()  # not a model: ignored
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[httpx.Client]:
    app = create_app(repository=repo, auth_token="s3cret", max_body_size=4096, max_batch_size=0)
    with httpx.Client(
        transport=InProcessTransport(app), base_url="http://t", headers={"authorization": "Bearer s3cret"}
    ) as c:
        yield c


def _infer(client: httpx.Client, path: str, inputs: dict[str, np.ndarray], **kw: object) -> httpx.Response:
    body, headers = v2.encode_request(inputs, **kw)  # type: ignore[arg-type]
    return client.post(path, content=body, headers=headers)


def _healthy(client: httpx.Client, mlp: Model) -> None:
    assert client.get("/v2/health/live").status_code == 200
    x = np.ones((2, 4), np.float32)
    r = _infer(client, "/v2/models/mlp/versions/1/infer", {"x": x})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(v2.decode_response(r.content).outputs["y"], mlp.predict(x)["y"])


def test_server_metadata_and_health(client: httpx.Client) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "aimass" and "binary_tensor_data" in meta["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_repository_layout_is_discovered(client: httpx.Client) -> None:
    index = client.post("/v2/repository/index").json()
    assert [(e["name"], e["version"], e["state"]) for e in index] == [
        ("fails", "1", "READY"),
        ("mlp", "1", "READY"),
        ("mlp", "2", "READY"),
        ("two", "1", "READY"),
    ]


def test_model_metadata_ready_and_config(client: httpx.Client) -> None:
    meta = client.get("/v2/models/mlp").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get("/v2/models/mlp/versions/2").json()["name"] == "mlp"
    assert client.get("/v2/models/mlp/ready").status_code == 200
    assert client.get("/v2/models/mlp/versions/1/ready").status_code == 200
    config = client.get("/v2/models/two/config").json()
    assert config["max_batch_size"] == 0  # batching is off in this app: full shapes
    assert config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]},
        {"name": "scale", "data_type": "TYPE_INT64", "dims": [-1, 1]},
    ]


def test_versions_answer_their_own_model(client: httpx.Client, repo: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    v1 = v2.decode_response(_infer(client, "/v2/models/mlp/versions/1/infer", {"x": x}).content)
    v2_ = v2.decode_response(_infer(client, "/v2/models/mlp/versions/2/infer", {"x": x}).content)
    latest = v2.decode_response(_infer(client, "/v2/models/mlp/infer", {"x": x}).content)
    assert (v1.model_version, v2_.model_version, latest.model_version) == ("1", "2", "2")
    np.testing.assert_array_equal(v1.outputs["y"], Model.load(repo / "mlp" / "1").predict(x)["y"])
    np.testing.assert_array_equal(latest.outputs["y"], Model.load(repo / "mlp" / "2").predict(x)["y"])
    assert not np.array_equal(v1.outputs["y"], v2_.outputs["y"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_two_inputs_json_and_binary(client: httpx.Client, binary: bool) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    scale = np.array([[2], [3]], dtype=np.int64)
    r = _infer(client, "/v2/models/two/infer", {"x": x, "scale": scale}, binary=binary, binary_output=binary)
    assert r.status_code == 200, r.text
    header = r.headers.get(v2.HEADER_LENGTH)
    assert (header is not None) == binary
    out = v2.decode_response(r.content, None if header is None else int(header))
    np.testing.assert_array_equal(out.outputs["y"], x * scale)


def test_requested_outputs_and_id(client: httpx.Client) -> None:
    body = orjson.dumps(
        {
            "id": "req-1",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "y"}],
        }
    )
    doc = client.post("/v2/models/mlp/infer", content=body).json()
    assert doc["id"] == "req-1" and [o["name"] for o in doc["outputs"]] == ["y"]


def _error(r: httpx.Response, status: int, match: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert match in r.json()["error"], r.json()


def test_404_unknown_model_and_version(client: httpx.Client, mlp: Model) -> None:
    x = {"x": np.ones((1, 4), np.float32)}
    _error(_infer(client, "/v2/models/nope/infer", x), 404, "unknown model 'nope'")
    _error(_infer(client, "/v2/models/mlp/versions/9/infer", x), 404, "model 'mlp' has no version '9'")
    _error(client.get("/v2/models/nope"), 404, "unknown model")
    _error(client.get("/v2/models/mlp/versions/9/ready"), 404, "no version '9'")
    _error(client.get("/v2/nothing/here"), 404, "no route GET /v2/nothing/here")
    _healthy(client, mlp)


@pytest.mark.parametrize(
    ("body", "headers", "match"),
    [
        (b"{malformed", {}, "malformed JSON request"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]}', {}, "needs 4 values"),
        (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1, 4], "data": [1, 2, 3, 4]}]}', {}, "unknown dat"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}', {}, "input 'x'"),
        (b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}', {}, "missing in"),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 4], "data": ["a","b","c","d"]}]}',
            {},
            "the request declares BYTES, the model takes FP32",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}'
            + b"\0" * 8,
            {v2.HEADER_LENGTH: "94"},
            "binary data sizes add up to 16 bytes but the body carries 8",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":8}}]}'
            + b"\0" * 8,
            {v2.HEADER_LENGTH: "93"},
            "binary data has 8 bytes",
        ),
        (b"{}", {v2.HEADER_LENGTH: "many"}, "must be an integer"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],'
            b' "outputs": [{"name": "nope"}]}',
            {},
            "model 'mlp' has no output 'nope'",
        ),
    ],
    ids=[
        "malformed-json",
        "data-size",
        "datatype",
        "shape",
        "missing-input",
        "wrong-dtype",
        "binary-sizes",
        "binary-shape",
        "header-length",
        "unknown-output",
    ],
)
def test_400_bad_requests(client: httpx.Client, mlp: Model, body: bytes, headers: dict[str, str], match: str) -> None:
    _error(client.post("/v2/models/mlp/versions/1/infer", content=body, headers=headers), 400, match)
    _healthy(client, mlp)


def test_400_message_is_the_local_schema_error(client: httpx.Client, mlp: Model) -> None:
    bad = np.zeros((2, 5), np.float32)
    r = _infer(client, "/v2/models/mlp/infer", {"x": bad})
    with pytest.raises(Exception) as local:
        mlp.predict(bad)
    assert r.status_code == 400
    assert r.json() == {"error": str(local.value), "tensor": "x"}
    r = _infer(client, "/v2/models/two/infer", {"x": np.zeros((1, 4), np.float32), "scale": np.full((1, 1), 0.5)})
    _error(r, 400, "input 'scale': expected INT64 shape [-1, 1], got float64 shape [1, 1]: the request declares FP64")


def test_413_body_too_large(client: httpx.Client, mlp: Model) -> None:
    r = _infer(client, "/v2/models/mlp/infer", {"x": np.zeros((400, 4), np.float32)}, binary=True)
    _error(r, 413, "exceeds the limit of 4096 bytes")

    def chunks() -> Iterator[bytes]:  # no content-length: the limit holds while streaming too
        yield b'{"inputs": ['
        for _ in range(100):
            yield b" " * 100

    _error(client.post("/v2/models/mlp/infer", content=chunks()), 413, "exceeds the limit")
    _healthy(client, mlp)


def test_500_model_failure_keeps_the_message(client: httpx.Client, mlp: Model) -> None:
    ok = _infer(client, "/v2/models/fails/infer", {"x": np.ones((3, 4), np.float32)})
    assert ok.status_code == 200 and v2.decode_response(ok.content).outputs["y"].shape == (4, 3)
    r = _infer(client, "/v2/models/fails/infer", {"x": np.ones((1, 4), np.float32)})
    _error(r, 500, "onnxruntime failed")
    assert "cannot be reshaped" in r.json()["error"]
    _healthy(client, mlp)


def test_405_and_auth(client: httpx.Client, repo: Path, mlp: Model) -> None:
    _error(client.get("/v2/models/mlp/infer"), 405, "use POST")
    _error(client.post("/v2/models/mlp"), 405, "use GET")
    anonymous = httpx.Client(transport=client._transport, base_url="http://t")
    assert anonymous.get("/v2/health/live").status_code == 200
    assert anonymous.get("/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/mlp", "/metrics"):
        r = anonymous.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    r = anonymous.post("/v2/models/mlp/infer", content=b"{}", headers={"authorization": "Bearer wrong"})
    _error(r, 401, "bearer token")
    _healthy(client, mlp)


def test_repository_unload_and_load(client: httpx.Client, mlp: Model) -> None:
    assert client.post("/v2/repository/models/two/unload", json={}).status_code == 200
    index = {(e["name"], e["state"]) for e in client.post("/v2/repository/index").json()}
    assert ("two", "UNAVAILABLE") in index
    assert client.post("/v2/repository/index", json={"ready": True}).json()[-1]["name"] == "mlp"
    _error(client.get("/v2/models/two/ready"), 404, "not loaded")
    _error(client.post("/v2/repository/models/ghost/load", json={}), 404, "not in the repository")
    assert client.post("/v2/repository/models/two/load", json={}).status_code == 200
    assert client.get("/v2/models/two/ready").status_code == 200
    _healthy(client, mlp)


def test_metrics_count_requests_failures_and_batches(client: httpx.Client, mlp: Model) -> None:
    before = client.get("/metrics").text
    _healthy(client, mlp)
    _infer(client, "/v2/models/mlp/versions/1/infer", {"x": np.zeros((1, 7), np.float32)})
    text = client.get("/metrics").text

    def value(text: str, prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    key = '{model="mlp",version="1"}'
    assert value(text, f"aimass_requests_total{key}") == value(before, f"aimass_requests_total{key}") + 2
    fail = 'aimass_request_failures_total{model="mlp",status="400",version="1"}'
    assert value(text, fail) == value(before, fail) + 1
    assert value(text, f"aimass_batch_size_sum{key}") == value(before, f"aimass_batch_size_sum{key}") + 2
    for name in ("aimass_queue_seconds_count", "aimass_compute_seconds_count", "aimass_request_seconds_count"):
        assert value(text, name + key) > 0, name
    assert value(text, f"aimass_requests_in_flight{key}") == 0


def test_each_app_has_its_own_metrics(mlp: Model) -> None:
    a, b = create_app({"m": mlp}), create_app({"m": mlp})
    assert a.metrics.registry is not b.metrics.registry


def test_create_app_needs_a_source() -> None:
    with pytest.raises(ValueError, match="needs models"):
        create_app()


def test_serves_a_model_library_root(tmp_path: Path, mlp: Model) -> None:
    from aimass.store import Store

    lib = Store(tmp_path / "library")
    lib.publish(mlp, "fraud")
    lib.publish(Model.load(models.onnx_mlp(tmp_path / "m2.onnx", seed=1)), "fraud")
    lib.set_alias("fraud", "production", 1)
    app = create_app(repository=tmp_path / "library")
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as c:
        index = c.post("/v2/repository/index").json()
        assert [(e["name"], e["version"], e["state"]) for e in index] == [
            ("fraud", "1", "READY"),
            ("fraud", "2", "READY"),
        ]
        x = np.ones((2, 4), np.float32)
        r = _infer(c, "/v2/models/fraud/versions/1/infer", {"x": x})
        np.testing.assert_array_equal(v2.decode_response(r.content).outputs["y"], mlp.predict(x)["y"])
        # A library alias works as a version; a canary split is drawn per request.
        assert (
            v2.decode_response(_infer(c, "/v2/models/fraud/versions/production/infer", {"x": x}).content).model_version
            == "1"
        )
        lib.set_alias("fraud", "production", {1: 0.5, 2: 0.5})
        seen = {
            v2.decode_response(_infer(c, "/v2/models/fraud/versions/production/infer", {"x": x}).content).model_version
            for _ in range(60)
        }
        assert seen == {"1", "2"}
        _error(_infer(c, "/v2/models/fraud/versions/staging/infer", {"x": x}), 404, "has no version 'staging'")
