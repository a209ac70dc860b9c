"""The stock Triton HTTP client (``tritonclient.http``) against our server over a real socket:
every endpoint, JSON and binary tensors, the error table with the server healthy after each case,
and many concurrent clients through the dynamic batcher each getting their own answer."""

from __future__ import annotations

from collections.abc import Iterator

import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.server import create_app

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    tmp = tmp_path_factory.mktemp("triton")
    return {
        "mlp": Model.load(models.onnx_mlp(tmp / "mlp.onnx")),
        "two": Model.load(models.onnx_two_inputs(tmp / "two.onnx")),
        "fails": Model.load(serving.onnx_reshape_fails(tmp / "fails.onnx")),
    }


@pytest.fixture(scope="module")
def url(local: dict[str, Model]) -> Iterator[str]:
    # A long queue delay makes concurrent requests merge reliably; a full batch still leaves at once.
    app = create_app(local, max_batch_size=32, max_queue_delay=0.02)
    with serving.live_server(app) as address:
        yield address


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[object]:
    c = httpclient.InferenceServerClient(url=url, concurrency=16)
    yield c
    c.close()


def _input(name: str, arr: np.ndarray, binary: bool) -> object:
    dtype = {np.float32: "FP32", np.int64: "INT64"}[arr.dtype.type]
    i = httpclient.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr, binary_data=binary)
    return i


def _healthy(client: object, local: dict[str, Model]) -> None:
    assert client.is_server_live() and client.is_server_ready()  # type: ignore[attr-defined]
    x = np.full((1, 4), 0.5, np.float32)
    result = client.infer("mlp", [_input("x", x, True)])  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("y"), local["mlp"].predict(x)["y"])


def test_server_endpoints(client: object) -> None:
    assert client.is_server_live()  # type: ignore[attr-defined]
    assert client.is_server_ready()  # type: ignore[attr-defined]
    meta = client.get_server_metadata()  # type: ignore[attr-defined]
    assert meta["name"] == "aimass" and "binary_tensor_data" in meta["extensions"]


def test_model_endpoints(client: object) -> None:
    assert client.is_model_ready("mlp")  # type: ignore[attr-defined]
    assert client.is_model_ready("mlp", model_version="1")  # type: ignore[attr-defined]
    assert not client.is_model_ready("ghost")  # type: ignore[attr-defined]
    meta = client.get_model_metadata("two", model_version="1")  # type: ignore[attr-defined]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 4]),
        ("scale", "INT64", [-1, 1]),
    ]
    config = client.get_model_config("mlp")  # type: ignore[attr-defined]
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 20000}


def test_repository_endpoints(client: object, local: dict[str, Model]) -> None:
    index = client.get_model_repository_index()  # type: ignore[attr-defined]
    assert {(e["name"], e["state"]) for e in index} == {("mlp", "READY"), ("two", "READY"), ("fails", "READY")}
    client.unload_model("two")  # type: ignore[attr-defined]
    assert not client.is_model_ready("two")  # type: ignore[attr-defined]
    client.load_model("two")  # type: ignore[attr-defined]
    assert client.is_model_ready("two")  # type: ignore[attr-defined]
    _healthy(client, local)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_json_and_binary(client: object, local: dict[str, Model], binary: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    scale = rng.integers(-3, 4, (5, 1)).astype(np.int64)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=binary)]
    result = client.infer(  # type: ignore[attr-defined]
        "two", [_input("x", x, binary), _input("scale", scale, binary)], outputs=outputs, request_id="abc"
    )
    np.testing.assert_array_equal(result.as_numpy("y"), local["two"].predict({"x": x, "scale": scale})["y"])
    response = result.get_response()
    assert response["id"] == "abc" and response["model_name"] == "two"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == binary
    mlp = client.infer("mlp", [_input("x", x, binary)], model_version="1")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(mlp.as_numpy("y"), local["mlp"].predict(x)["y"])


@pytest.mark.parametrize(
    ("case", "status", "match"),
    [
        ("unknown-model", "404", "unknown model 'ghost'"),
        ("unknown-version", "404", "has no version '7'"),
        ("wrong-shape", "400", "input 'x': expected FP32 shape [-1, 4], got float32 shape [2, 5]"),
        ("wrong-dtype", "400", "input 'scale': expected INT64 shape [-1, 1], got float32 shape [2, 1]"),
        ("missing-input", "400", "missing input 'scale'"),
        ("data-size", "400", "binary data has 16 bytes, FP32 shape [2, 4] needs 32"),
        ("model-failure", "500", "onnxruntime failed"),
    ],
)
def test_errors_then_healthy(client: object, local: dict[str, Model], case: str, status: str, match: str) -> None:
    x = np.ones((2, 4), np.float32)
    calls = {
        "unknown-model": lambda: client.infer("ghost", [_input("x", x, True)]),  # type: ignore[attr-defined]
        "unknown-version": lambda: client.infer("mlp", [_input("x", x, True)], model_version="7"),  # type: ignore[attr-defined]
        "wrong-shape": lambda: client.infer("mlp", [_input("x", np.ones((2, 5), np.float32), False)]),  # type: ignore[attr-defined]
        "wrong-dtype": lambda: client.infer(  # type: ignore[attr-defined]
            "two", [_input("x", x, True), _input("scale", np.ones((2, 1), np.float32), True)]
        ),
        "missing-input": lambda: client.infer("two", [_input("x", x, True)]),  # type: ignore[attr-defined]
        "data-size": lambda: client.infer("mlp", [_lying_input(x)]),  # type: ignore[attr-defined]
        "model-failure": lambda: client.infer("fails", [_input("x", np.ones((1, 4), np.float32), True)]),  # type: ignore[attr-defined]
    }
    with pytest.raises(InferenceServerException) as info:
        calls[case]()
    assert info.value.status() == status, info.value
    assert match in info.value.message(), info.value.message()
    _healthy(client, local)


def _lying_input(x: np.ndarray) -> object:
    # Declares shape [2, 4] but carries the bytes of only one row.
    i = httpclient.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(x[:1], binary_data=True)
    i.set_shape([2, 4])
    return i


def test_auth_with_stock_client(local: dict[str, Model]) -> None:
    app = create_app({"mlp": local["mlp"]}, auth_token="tok")
    with serving.live_server(app) as address:
        c = httpclient.InferenceServerClient(url=address)
        assert c.is_server_live()
        with pytest.raises(InferenceServerException) as info:
            c.get_model_metadata("mlp")
        assert info.value.status() == "401"
        assert c.get_model_metadata("mlp", headers={"Authorization": "Bearer tok"})["name"] == "mlp"
        c.close()


def test_body_limit_over_a_socket(local: dict[str, Model]) -> None:
    app = create_app({"mlp": local["mlp"]}, max_body_size=4096)
    with serving.live_server(app) as address:
        c = httpclient.InferenceServerClient(url=address)
        with pytest.raises(InferenceServerException) as info:
            c.infer("mlp", [_input("x", np.ones((2000, 4), np.float32), True)])
        assert info.value.status() == "413" and "exceeds the limit of 4096 bytes" in info.value.message()
        _healthy(c, local)
        c.close()


def test_concurrent_clients_get_their_own_answers_through_the_batcher(
    client: object, local: dict[str, Model], url: str
) -> None:
    import httpx

    def batch_counts() -> dict[str, float]:
        text = httpx.get(f"http://{url}/metrics").text
        return {
            ln.split("{")[0]: float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith(("aimass_batch_size_count", "aimass_batch_size_sum")) and 'model="mlp"' in ln
        }

    before = batch_counts()
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(96)]
    expected = [local["mlp"].predict(x)["y"] for x in inputs]
    pending = [
        client.async_infer("mlp", [_input("x", x, i % 2 == 0)])  # type: ignore[attr-defined]
        for i, x in enumerate(inputs)
    ]
    for i, (p, want) in enumerate(zip(pending, expected, strict=True)):
        got = p.get_result().as_numpy("y")
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"request {i}")
    after = batch_counts()
    # Every row went through the model, in fewer model calls than requests: requests were merged.
    # How many merge depends on how fast the client (one gevent thread) sends: on a loaded 2-core CI
    # machine 96 requests took 48 calls, on a quiet one far fewer, so only "some merged" is asserted.
    assert after["aimass_batch_size_sum"] - before["aimass_batch_size_sum"] == sum(len(x) for x in inputs)
    assert after["aimass_batch_size_count"] - before["aimass_batch_size_count"] < len(inputs), (before, after)
