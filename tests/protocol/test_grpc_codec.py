"""The protobuf half of the V2 codec (aimass.protocol.grpc.codec): both tensor encodings, every datatype,
and malformed messages refused with the HTTP codec's SchemaError before anything is allocated."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("grpc")
from aimass.errors import SchemaError
from aimass.protocol.grpc import codec
from aimass.protocol.grpc import grpc_service_pb2 as pb

ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
    "f64": np.array([1e300, -0.0]),
    "i8": np.array([[-128, 127]], np.int8),
    "i16": np.array([-32768, 7], np.int16),
    "i32": np.array([2**31 - 1], np.int32),
    "i64": np.array([-(2**63), 2**63 - 1], np.int64),
    "u8": np.array([0, 255], np.uint8),
    "u16": np.array([65535], np.uint16),
    "u32": np.array([2**32 - 1], np.uint32),
    "u64": np.array([2**64 - 1], np.uint64),
    "b": np.array([True, False, True]),
    "s": np.array([b"", "\u2603".encode(), b"x" * 70], dtype=object),
    "empty": np.zeros((0, 4), np.float32),
}


@pytest.mark.parametrize("raw", [True, False])
def test_every_datatype_round_trips(raw: bool) -> None:
    msg = codec.encode_infer_request(ARRAYS, model_name="m", raw=raw, request_id="7", parameters={"p": 1.5})
    assert bool(msg.raw_input_contents) == raw
    decoded = codec.decode_infer_request(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert decoded.id == "7" and decoded.parameters == {"p": 1.5}
    for name, want in ARRAYS.items():
        got = decoded.inputs[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tolist() == want.tolist(), name


def test_half_precision_and_binary_strings_force_raw() -> None:
    for value in (np.ones(2, np.float16), np.array([b"\xff"], dtype=object)):
        msg = codec.encode_infer_request({"x": value}, model_name="m", raw=False)
        assert len(msg.raw_input_contents) == 1
        assert codec.decode_infer_request(msg).inputs["x"].tolist() == value.tolist()


def test_responses_raw_out_and_typed_in() -> None:
    out = {"y": np.ones((2, 3), np.float32), "label": np.array([1, 2], np.int64)}
    msg = codec.encode_infer_response(out, model_name="m", model_version="2", request_id="r")
    assert len(msg.raw_output_contents) == 2
    back = codec.decode_infer_response(msg)
    assert (back.model_name, back.model_version, back.id) == ("m", "2", "r")
    assert {k: v.tolist() for k, v in back.outputs.items()} == {k: v.tolist() for k, v in out.items()}
    typed = pb.ModelInferResponse(model_name="m")  # what MLServer answers: typed contents
    t = typed.outputs.add(name="p", datatype="FP64", shape=[1, 2])
    t.contents.fp64_contents.extend([0.25, 0.75])
    assert codec.decode_infer_response(typed).outputs["p"].tolist() == [[0.25, 0.75]]


def _request(datatype: str = "FP32", shape: tuple[int, ...] = (2, 4)) -> object:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="x", datatype=datatype, shape=list(shape))
    return msg


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: m.raw_input_contents.append(b"\0" * 32) or m.inputs[0].shape.__setitem__(0, 2**31), "more than"),
        (lambda m: m.raw_input_contents.append(b"\0" * 31), "binary data has 31 bytes, FP32 shape [2, 4] needs 32"),
        (lambda m: m.raw_input_contents.extend([b"", b""]), "raw_input_contents has 2 entries for 1 inputs"),
        (lambda m: m.inputs[0].contents.fp32_contents.extend([1.0] * 7), "shape [2, 4] needs 8 values, 'data' has 7"),
        (
            lambda m: m.inputs[0].contents.fp32_contents.extend([1.0] * 8) or m.raw_input_contents.append(b"\0" * 32),
            "both typed contents and raw contents",
        ),
        (
            lambda m: m.inputs[0].shape.__setitem__(0, 0) or m.inputs.add(name="x", datatype="FP32", shape=[0, 4]),
            "appears twice",
        ),
        (lambda m: m.inputs[0].shape.__setitem__(1, -4), "non-negative integers"),
    ],
)
def test_malformed_requests_name_the_problem(build: object, message: str) -> None:
    msg = _request()
    build(msg)  # type: ignore[operator]
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        codec.decode_infer_request(msg)


def test_typed_values_are_checked_like_json() -> None:
    msg = _request("INT8", (2,))
    msg.inputs[0].contents.int_contents.extend([1, 300])
    with pytest.raises(SchemaError, match=r"values \[1, 300\] do not fit INT8"):
        codec.decode_infer_request(msg)
    msg = _request("FP16", (1,))
    with pytest.raises(SchemaError, match="FP16 has no typed contents field"):
        codec.decode_infer_request(msg)
    msg = _request("FP99", (1,))
    with pytest.raises(SchemaError, match="unknown datatype 'FP99'"):
        codec.decode_infer_request(msg)


def test_raw_fast_paths_keep_layout_byte_order_and_values() -> None:
    # Outputs in any layout come out in C order; raw inputs are read in place (no copy) and equal
    # what was sent.
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    outputs = {"t": base.T, "s": base[:, ::2], "i": np.array([[1, -2]], np.int64)}
    msg = codec.encode_infer_response(outputs, model_name="m")
    back = codec.decode_infer_response(msg).outputs
    np.testing.assert_array_equal(back["t"], base.T)
    np.testing.assert_array_equal(back["s"], base[:, ::2])
    assert back["t"].dtype == np.float32 and back["i"].tolist() == [[1, -2]]
    request = codec.encode_infer_request({"x": base}, model_name="m")
    x = codec.decode_infer_request(request).inputs["x"]
    np.testing.assert_array_equal(x, base)
    assert x.dtype == np.float32 and not x.flags.owndata
