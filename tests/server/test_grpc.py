"""The stock Triton gRPC client (``tritonclient.grpc``) against our gRPC server over a real socket.

Health, server and model metadata, model config, repository index/load/unload, inference with raw
and typed contents (numbers and BYTES), the error table (same messages as HTTP) with the server
healthy after each case, auth, metrics and the message size limit; the server runs in-process on a
free port (:class:`aimass.server.grpc.BackgroundServer`). One test starts ``aimass serve --grpc-port``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.server import create_app

grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from aimass.server.grpc import BackgroundServer  # noqa: E402

TOKEN = "grpc-test-token-0123456789"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    tmp = tmp_path_factory.mktemp("grpc")
    return {
        "mlp": Model.load(models.onnx_mlp(tmp / "mlp.onnx")),
        "strings": Model.load(serving.onnx_strings(tmp / "strings.onnx")),
        "fails": Model.load(serving.onnx_reshape_fails(tmp / "fails.onnx")),
    }


@pytest.fixture(scope="module")
def server(local: dict[str, Model]) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(create_app(local, max_batch_size=32, max_body_size=1 << 20))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[object]:
    c = grpcclient.InferenceServerClient(url=server.target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: BackgroundServer) -> Iterator[object]:
    """The generated stub of Triton's client package: requests with typed contents, or malformed ones."""
    channel = grpc.insecure_channel(server.target)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _input(name: str, arr: np.ndarray, datatype: str) -> object:
    i = grpcclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


def _healthy(client: object, local: dict[str, Model]) -> None:
    assert client.is_server_live() and client.is_server_ready()  # type: ignore[attr-defined]
    x = np.full((1, 4), 0.5, np.float32)
    result = client.infer("mlp", [_input("x", x, "FP32")])  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("y"), local["mlp"].predict(x)["y"])


def _http_error(local: dict[str, Model], model: str, body: dict[str, object]) -> tuple[int, str]:
    """What the HTTP app answers for the same request (its own app: one event loop per app)."""
    transport = httpx.ASGITransport(app=create_app(local))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(f"/v2/models/{model}/infer", json=body)

    import asyncio

    response = asyncio.run(call())
    return response.status_code, response.json()["error"]


def test_health_metadata_and_config(client: object) -> None:
    c = client
    assert c.is_server_live() and c.is_server_ready()  # type: ignore[attr-defined]
    assert c.is_model_ready("mlp") and not c.is_model_ready("nope")  # type: ignore[attr-defined]
    meta = c.get_server_metadata(as_json=True)  # type: ignore[attr-defined]
    assert meta["name"] == "aimass" and "model_repository" in meta["extensions"]
    model = c.get_model_metadata("mlp", as_json=True)  # type: ignore[attr-defined]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "3"]}]
    config = c.get_model_config("mlp", as_json=True)["config"]  # type: ignore[attr-defined]
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}]
    strings = c.get_model_config("strings", as_json=True)["config"]  # type: ignore[attr-defined]
    assert strings["input"][0]["data_type"] == "TYPE_STRING"


def test_repository_index_unload_load(client: object, local: dict[str, Model]) -> None:
    c = client
    index = c.get_model_repository_index(as_json=True)["models"]  # type: ignore[attr-defined]
    assert {m["name"]: m["state"] for m in index} == {"fails": "READY", "mlp": "READY", "strings": "READY"}
    c.unload_model("strings")  # type: ignore[attr-defined]
    assert not c.is_model_ready("strings")  # type: ignore[attr-defined]
    index = c.get_model_repository_index(as_json=True)["models"]  # type: ignore[attr-defined]
    assert {m["name"]: m.get("state") for m in index}["strings"] == "UNAVAILABLE"
    c.load_model("strings")  # type: ignore[attr-defined]
    assert c.is_model_ready("strings")  # type: ignore[attr-defined]
    _healthy(c, local)


def test_infer_raw_contents_matches_local(client: object, local: dict[str, Model]) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = grpcclient.InferRequestedOutput("y")
    result = client.infer("mlp", [_input("x", x, "FP32")], outputs=[out], request_id="r-1")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("y"), local["mlp"].predict(x)["y"])
    response = result.get_response()
    assert response.model_name == "mlp" and response.model_version == "1" and response.id == "r-1"


def test_infer_typed_contents(stub: object, local: dict[str, Model]) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = stub.ModelInfer(request)  # type: ignore[attr-defined]
    y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(list(response.outputs[0].shape))
    np.testing.assert_array_equal(y, local["mlp"].predict(x)["y"])


def test_bytes_raw_and_typed(client: object, stub: object) -> None:
    # onnxruntime strings must be UTF-8; the length prefixes carry empty, multi-byte and long elements.
    text = np.array([[b"caf\xc3\xa9", b""], ["\u00fcber\n\u2603".encode(), b"x" * 300]], dtype=np.object_)
    result = client.infer("strings", [_input("text", text, "BYTES")])  # type: ignore[attr-defined]
    assert result.as_numpy("same").tolist() == text.tolist()
    request = service_pb2.ModelInferRequest(model_name="strings")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1, 2])
    tensor.contents.bytes_contents.extend([b"a", b"\xc3\xa9"])
    response = stub.ModelInfer(request)  # type: ignore[attr-defined]
    raw = response.raw_output_contents[0]  # 4-byte little-endian length before each element
    assert raw == b"\x01\x00\x00\x00a\x02\x00\x00\x00\xc3\xa9"


@pytest.mark.parametrize(
    ("model", "shape", "datatype", "raw", "code", "http"),
    [
        ("nope", [1, 4], "FP32", b"\0" * 16, "NOT_FOUND", 404),
        ("mlp", [2, 5], "FP32", b"\0" * 40, "INVALID_ARGUMENT", 400),  # wrong shape for the model
        ("mlp", [2147483648, 4], "FP32", b"\0" * 32, "INVALID_ARGUMENT", 400),  # refused from the shape
        ("mlp", [2, 4], "FP32", b"\0" * 31, "INVALID_ARGUMENT", 400),  # raw bytes do not fit the shape
        ("mlp", [2, 4], "FP99", b"\0" * 32, "INVALID_ARGUMENT", 400),
        ("mlp", [2, 4], "INT32", b"\0" * 32, "INVALID_ARGUMENT", 400),  # declared INT32 for an FP32 input
        ("fails", [1, 4], "FP32", b"\0" * 16, "INTERNAL", 500),  # the model itself fails
    ],
)
def test_errors_match_http_and_server_keeps_serving(
    client: object,
    stub: object,
    local: dict[str, Model],
    model: str,
    shape: list[int],
    datatype: str,
    raw: bytes,
    code: str,
    http: int,
) -> None:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)  # type: ignore[attr-defined]
    assert info.value.code().name == code, info.value.details()
    if shape[0] < 1000:  # the HTTP app gets the same tensor as JSON (the 2^31-row one cannot be written)
        numbers = np.int32 if datatype == "INT32" else np.float32
        data = np.frombuffer(raw[: len(raw) // 4 * 4], numbers).tolist() if len(raw) % 4 == 0 else [0.0]
        body = {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}
        status, message = _http_error(local, model, body)
        assert status == http
        if len(raw) % 4 == 0:
            assert info.value.details() == message
    else:
        assert info.value.details().startswith("input 'x': shape [2147483648, 4] holds 8589934592 elements")
    _healthy(client, local)


def test_tritonclient_errors_are_typed(client: object, local: dict[str, Model]) -> None:
    x = np.ones((1, 4), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [_input("x", x, "FP32")])  # type: ignore[attr-defined]
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [_input("x", x, "FP32")], outputs=[grpcclient.InferRequestedOutput("z")])  # type: ignore[attr-defined]
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "has no output 'z'" in info.value.message()
    _healthy(client, local)


def test_message_size_limit(client: object, local: dict[str, Model]) -> None:
    big = np.zeros((70_000, 4), np.float32)  # 1.1 MB, over the server's 1 MiB limit
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [_input("x", big, "FP32")])  # type: ignore[attr-defined]
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    _healthy(client, local)


def test_token_and_metrics(local: dict[str, Model]) -> None:
    app = create_app({"mlp": local["mlp"]}, auth_token=TOKEN)
    srv = BackgroundServer(app)
    try:
        c = grpcclient.InferenceServerClient(url=srv.target)
        x = np.ones((3, 4), np.float32)
        assert c.is_server_live() and c.is_server_ready()  # health needs no token, as over HTTP
        for call in (lambda: c.infer("mlp", [_input("x", x, "FP32")]), lambda: c.get_model_metadata("mlp")):
            with pytest.raises(InferenceServerException) as info:
                call()
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            assert info.value.message() == "missing or wrong bearer token (Authorization: Bearer <token>)"
        wrong = {"authorization": "Bearer nope"}
        with pytest.raises(InferenceServerException, match="bearer token"):
            c.infer("mlp", [_input("x", x, "FP32")], headers=wrong)
        good = {"authorization": f"Bearer {TOKEN}"}
        result = c.infer("mlp", [_input("x", x, "FP32")], headers=good)
        np.testing.assert_array_equal(result.as_numpy("y"), local["mlp"].predict(x)["y"])
        with pytest.raises(InferenceServerException):
            c.infer("mlp", [_input("x", np.ones((1, 5), np.float32), "FP32")], headers=good)
        text = app.metrics.render()[0].decode()
        assert 'aimass_requests_total{model="mlp",version="1"} 2.0' in text
        assert 'aimass_request_failures_total{model="mlp",status="400",version="1"} 1.0' in text
        c.close()
    finally:
        srv.stop()


def test_cli_serves_http_and_grpc_side_by_side(tmp_path: Path, local: dict[str, Model]) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    http_port, grpc_port = serving.free_port(), serving.free_port()
    cmd = [sys.executable, "-m", "aimass", "serve", str(path), "--port", str(http_port), "--grpc-port", str(grpc_port)]
    process = subprocess.Popen(cmd, env={**os.environ, "AIMASS_SERVER_TOKEN": TOKEN}, start_new_session=True)
    try:
        serving.wait_ready(f"http://127.0.0.1:{http_port}/v2/health/ready", process=process)
        c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        x = np.ones((2, 4), np.float32)
        result = c.infer("mlp", [_input("x", x, "FP32")], headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(result.as_numpy("y"), local["mlp"].predict(x)["y"])
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            c.infer("mlp", [_input("x", x, "FP32")])
        c.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
