"""The strict wire: a V2 request that declares another datatype than the model's input is refused
with 400 naming the tensor and both types (as Triton does); local ``predict`` keeps its casts."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import models
import numpy as np
import pytest

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.errors import SchemaError
from aimass.protocol import v2
from aimass.server import create_app


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx"))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_two_inputs(tmp_path_factory.mktemp("two") / "two.onnx"))


@pytest.fixture(scope="module")
def client(mlp: Model, two: Model) -> Iterator[httpx.Client]:
    app = create_app({"mlp": mlp, "two": two}, max_batch_size=8)
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as c:
        yield c


def _post(client: httpx.Client, model: str, inputs: dict[str, np.ndarray], binary: bool) -> httpx.Response:
    body, headers = v2.encode_request(inputs, binary=binary)
    return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("sent", "declared"),
    [(np.int32, "INT32"), (np.float64, "FP64"), (np.float16, "FP16"), (np.int64, "INT64"), (np.bool_, "BOOL")],
)
def test_declared_datatype_mismatch_is_400(
    client: httpx.Client, mlp: Model, sent: type, declared: str, binary: bool
) -> None:
    x = np.ones((2, 4), dtype=sent)
    r = _post(client, "mlp", {"x": x}, binary)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["tensor"] == "x"
    assert f"the request declares {declared}, the model takes FP32" in doc["error"]
    assert doc["error"].startswith("input 'x': expected FP32 shape [-1, 4]")
    # The server keeps serving, and the same values sent as FP32 are answered.
    ok = _post(client, "mlp", {"x": x.astype(np.float32)}, binary)
    assert ok.status_code == 200, ok.text
    np.testing.assert_allclose(v2.decode_response(ok.content).outputs["y"], mlp.predict(x.astype(np.float32))["y"])


def test_bytes_to_a_number_input_and_second_input(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/mlp/infer",
        json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 4], "data": ["1", "2", "3", "4"]}]},
    )
    assert r.status_code == 400 and "the request declares BYTES, the model takes FP32" in r.json()["error"]
    # Only the mismatching tensor is named, even when another input is right.
    x = np.ones((1, 4), np.float32)
    r = _post(client, "two", {"x": x, "scale": np.ones((1, 1), np.int32)}, True)
    assert r.status_code == 400 and r.json()["tensor"] == "scale"
    assert "expected INT64 shape [-1, 1]" in r.json()["error"] and "declares INT32" in r.json()["error"]
    assert _post(client, "two", {"x": x, "scale": np.ones((1, 1), np.int64)}, True).status_code == 200


def test_unknown_and_missing_inputs_keep_their_messages(client: httpx.Client) -> None:
    r = _post(client, "mlp", {"z": np.ones((1, 4), np.int32)}, False)
    assert r.status_code == 400 and "missing input 'x'" in r.json()["error"]


def test_local_predict_keeps_its_documented_casts(mlp: Model) -> None:
    x = np.arange(8, dtype=np.int32).reshape(2, 4)
    np.testing.assert_allclose(mlp.predict(x)["y"], mlp.predict(x.astype(np.float32))["y"])
    np.testing.assert_allclose(mlp.predict(x.astype(np.float64))["y"], mlp.predict(x.astype(np.float32))["y"])


def test_check_datatypes_is_the_one_function(mlp: Model) -> None:
    """What the gRPC server calls too: same exception, same message as HTTP."""
    with pytest.raises(SchemaError, match="declares INT32, the model takes FP32") as e:
        v2.check_datatypes({"x": np.zeros((1, 4), np.int32)}, mlp.schema)
    assert e.value.tensor == "x"
    v2.check_datatypes({"x": np.zeros((1, 4), np.float32)}, mlp.schema)
