"""The V2 codec: JSON and binary round trips for every datatype, and a typed error for each malformed body."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aimass.errors import SchemaError
from aimass.protocol import v2
from aimass.schema import DType

NUMERIC = [d for d in DType if d is not DType.BYTES]


def _roundtrip_request(inputs: dict[str, np.ndarray], binary: bool) -> v2.InferRequest:
    body, headers = v2.encode_request(inputs, binary=binary)
    length = headers.get(v2.HEADER_LENGTH)
    assert (length is not None) == binary
    return v2.decode_request(body, None if length is None else int(length))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("dtype", NUMERIC, ids=[d.value for d in NUMERIC])
def test_numeric_round_trip(dtype: DType, binary: bool) -> None:
    rng = np.random.default_rng(0)
    if dtype is DType.BOOL:
        x = rng.random((3, 2)) > 0.5
    elif dtype.numpy.kind == "f":
        x = rng.standard_normal((3, 2)).astype(dtype.numpy)
    else:
        info = np.iinfo(dtype.numpy)
        x = np.array([[info.min, info.max], [0, 1], [info.max // 3, 7]], dtype=dtype.numpy)
    got = _roundtrip_request({"x": x}, binary).inputs["x"]
    assert got.dtype == dtype.numpy
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bytes_round_trip(binary: bool) -> None:
    x = np.array([[b"hello", b""], ["caf\u00e9".encode(), b"x" * 300]], dtype=object)
    got = _roundtrip_request({"s": x}, binary).inputs["s"]
    assert got.shape == (2, 2) and got.dtype == object
    assert got.tolist() == x.tolist()


def test_binary_bytes_layout_is_length_prefixed() -> None:
    body, headers = v2.encode_request({"s": np.array([b"ab", b"c"], dtype=object)}, binary=True)
    n = int(headers[v2.HEADER_LENGTH])
    assert body[n:] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    assert orjson.loads(body[:n])["inputs"][0]["parameters"] == {"binary_data_size": 11}


def test_non_utf8_bytes_need_binary() -> None:
    with pytest.raises(SchemaError, match="not UTF-8: send it as binary"):
        v2.encode_request({"s": np.array([b"\xff"], dtype=object)})


def test_binary_input_decodes_without_copy() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = _roundtrip_request({"x": x}, True).inputs["x"]
    assert got.base is not None and not got.flags.owndata


def test_mixed_binary_and_json_inputs_and_outputs() -> None:
    a, b = np.ones((2, 2), np.float32), np.arange(3, dtype=np.int64)
    body, headers = v2.encode_request({"a": a, "b": b}, binary={"b"}, outputs=["y"], binary_output=True, request_id="7")
    req = v2.decode_request(body, int(headers[v2.HEADER_LENGTH]))
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    assert req.id == "7" and req.outputs == [v2.RequestedOutput("y", True)]
    assert req.binary_outputs(["y", "z"]) == {"y"}


def test_request_level_binary_output_flag() -> None:
    body, _ = v2.encode_request({"x": np.ones(1, np.float32)}, binary_output=True)
    assert v2.decode_request(body).binary_outputs(["y", "z"]) == {"y", "z"}


@pytest.mark.parametrize("binary", [(), ("y",)], ids=["json", "binary"])
def test_response_round_trip(binary: tuple[str, ...]) -> None:
    y = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    label = np.array([1, 2], dtype=np.int64)
    body, length = v2.encode_response(
        {"y": y, "label": label}, model_name="m", model_version="2", request_id="r", binary=binary
    )
    assert (length is not None) == bool(binary)
    resp = v2.decode_response(body, length)
    assert (resp.model_name, resp.model_version, resp.id) == ("m", "2", "r")
    np.testing.assert_array_equal(resp.outputs["y"], y)
    np.testing.assert_array_equal(resp.outputs["label"], label)


def test_nested_json_data_is_accepted() -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}'
    np.testing.assert_array_equal(v2.decode_request(body).inputs["x"], [[1, 2], [3, 4]])


def test_mlserver_style_response_parameters_are_ignored() -> None:
    body = (
        b'{"model_name":"m","id":"abc","parameters":{},"outputs":[{"name":"predict","shape":[1,2],'
        b'"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.25,0.75]}]}'
    )
    out = v2.decode_response(body).outputs["predict"]
    assert out.dtype == np.float64 and out.tolist() == [[0.25, 0.75]]


def _tensor(**fields: object) -> bytes:
    t = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    t.update(fields)
    return orjson.dumps({"inputs": [t]})


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        (b"{not json", None, "malformed JSON request"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"outputs": []}', None, "has no 'inputs'"),
        (b'{"inputs": {"x": 1}}', None, "'inputs' must be a list"),
        (_tensor(datatype="FP8"), None, "input 'x': unknown datatype 'FP8'"),
        (_tensor(shape=[2, -1]), None, "input 'x': 'shape' must be a list of non-negative integers"),
        (_tensor(shape=[3]), None, r"input 'x': shape \[3\] needs 3 values, 'data' has 2"),
        (_tensor(data=[[1, 2], [3]]), None, "input 'x': 'data' is not a rectangular array"),
        (_tensor(data=["1", "2"]), None, "input 'x': FP32 'data' must hold numbers"),
        (_tensor(datatype="INT32", data=[1.5, 2]), None, "input 'x': INT32 'data' holds non-integer numbers"),
        (_tensor(datatype="UINT8", data=[1, 300]), None, r"input 'x': values \[1, 300\] do not fit UINT8"),
        (_tensor(datatype="BOOL", data=[1, 0]), None, "input 'x': BOOL 'data' must hold true/false"),
        (_tensor(datatype="BYTES", data=[1, 2]), None, "input 'x': BYTES 'data' must hold strings"),
        (_tensor(data=None) + b"", None, "input 'x': FP32 'data' must hold numbers"),
        (orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}), None, "no 'data'"),
        (
            orjson.dumps({"inputs": [_t := {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}, _t]}),
            None,
            "input 'x' appears twice",
        ),
        (b'{"inputs": []}', 99, "Inference-Header-Content-Length is 99 but the body has 14 bytes"),
    ],
)
def test_malformed_requests_raise_schema_error(body: bytes, header: int | None, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        v2.decode_request(body, header)


def _binary(size: int, payload: bytes, shape: list[int] | None = None, datatype: str = "FP32") -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": datatype, "shape": shape or [2], "parameters": {"binary_data_size": size}}
            ]
        }
    )
    return header + payload, len(header)


def test_binary_sizes_that_do_not_add_up() -> None:
    body, n = _binary(8, b"\0" * 12)
    with pytest.raises(SchemaError, match="binary data sizes add up to 8 bytes but the body carries 12"):
        v2.decode_request(body, n)


def test_binary_size_that_does_not_fit_the_shape() -> None:
    body, n = _binary(12, b"\0" * 12)
    with pytest.raises(SchemaError, match=r"input 'x': binary data has 12 bytes, FP32 shape \[2\] needs 8") as info:
        v2.decode_request(body, n)
    assert info.value.tensor == "x"


def test_truncated_binary_bytes() -> None:
    body, n = _binary(6, struct.pack("<I", 9) + b"ab", datatype="BYTES", shape=[1])
    with pytest.raises(SchemaError, match="BYTES element 0 needs 9 bytes, 2 left"):
        v2.decode_request(body, n)


def test_shared_memory_is_refused() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"shared_memory_region": "r"}}]}
    )
    with pytest.raises(SchemaError, match="shared-memory extension is not supported"):
        v2.decode_request(body)


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        elements={"allow_nan": False, "allow_infinity": False},
    ),
    binary=st.booleans(),
)
def test_any_array_round_trips(arr: np.ndarray, binary: bool) -> None:
    got = _roundtrip_request({"t": arr}, binary).inputs["t"]
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_nan_survives_json_as_null() -> None:
    y = np.array([1.5, np.nan], np.float32)
    body, _ = v2.encode_response({"y": y}, model_name="m")
    assert b"null" in body
    got = v2.decode_response(body).outputs["y"]
    assert got.dtype == np.float32 and got[0] == 1.5 and np.isnan(got[1])
