"""The V2 documents other than inference: what the server builds, the client parses back, for every
dtype and dynamic dimensions; malformed answers fail with ModelLoadError naming the URL and field."""

from __future__ import annotations

import doctest
import re
from typing import Any

import orjson
import pytest

from aimass.errors import ModelLoadError
from aimass.protocol import documents
from aimass.schema import DType, Schema, TensorSpec

URL = "http://peer.test/v2/models/m"

SHAPES = [[-1], [-1, 4], [-1, -1, 3], [2, -1], [5], [], [-1, 0, 7]]


def _schema(batched: bool = False) -> Schema:
    """Every dtype, as input and as output, with assorted dynamic dimensions."""
    shapes = [s for s in SHAPES if s[:1] == [-1]] if batched else SHAPES
    inputs = [TensorSpec(name=f"in_{d.value}", dtype=d, shape=shapes[i % len(shapes)]) for i, d in enumerate(DType)]
    outputs = [
        TensorSpec(name=f"out_{d.value}", dtype=d, shape=shapes[(i + 1) % len(shapes)]) for i, d in enumerate(DType)
    ]
    return Schema(inputs=inputs, outputs=outputs)


def _wire(doc: Any) -> Any:
    return orjson.loads(orjson.dumps(doc))  # what the other end reads


def test_model_metadata_round_trip_every_dtype() -> None:
    schema = _schema()
    doc = documents.model_metadata("m", ["1", "2"], schema, platform="aimass_onnx")
    parsed = documents.parse_model_metadata(_wire(doc), URL)
    assert parsed.schema == schema
    assert (parsed.name, parsed.versions, parsed.platform) == ("m", ("1", "2"), "aimass_onnx")
    assert documents.schema_from_metadata(_wire(doc), URL) == schema
    assert doc["inputs"][1] == {"name": "in_UINT8", "datatype": "UINT8", "shape": [-1, 4]}


def test_model_metadata_wire_form_is_pinned() -> None:
    schema = Schema(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", dtype="BYTES", shape=[-1])],
    )
    body = orjson.dumps(documents.model_metadata("mlp", ["1"], schema, platform="aimass_onnx"))
    assert body == (
        b'{"name":"mlp","versions":["1"],"platform":"aimass_onnx",'
        b'"inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],'
        b'"outputs":[{"name":"y","datatype":"BYTES","shape":[-1]}]}'
    )


@pytest.mark.parametrize("max_batch_size", [0, 16])
def test_model_config_round_trip_every_dtype(max_batch_size: int) -> None:
    schema = _schema(batched=max_batch_size > 0)
    doc = documents.model_config(
        "m", schema, version="3", platform="aimass_onnx", backend="onnx", max_batch_size=max_batch_size
    )
    parsed = documents.parse_model_config(_wire(doc), URL)
    assert parsed.schema == schema and parsed.max_batch_size == max_batch_size and parsed.name == "m"
    assert {"name": "in_BYTES", "data_type": "TYPE_STRING"}.items() <= doc["input"][-1].items()


def test_model_config_wire_form_is_pinned() -> None:
    schema = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])
    doc = documents.model_config(
        "mlp", schema, version="2", platform="aimass_onnx", backend="onnx", max_batch_size=32, max_queue_delay=0.02
    )
    assert orjson.dumps(doc) == (
        b'{"name":"mlp","platform":"aimass_onnx","backend":"onnx","version_policy":{"specific":{"versions":[2]}},'
        b'"max_batch_size":32,"input":[{"name":"x","data_type":"TYPE_FP32","dims":[4]}],"output":[],'
        b'"instance_group":[{"kind":"KIND_CPU","count":1}],"dynamic_batching":{"max_queue_delay_microseconds":20000}}'
    )
    plain = documents.model_config("mlp", schema, version="beta", platform="p", backend="b", device="cuda:0")
    assert plain["version_policy"] == {} and plain["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]
    assert "dynamic_batching" not in plain and plain["input"][0]["dims"] == [-1, 4]


def test_model_config_accepts_protobuf_json_int64_strings() -> None:
    doc = {"name": "m", "max_batch_size": "8", "input": [{"name": "x", "data_type": "TYPE_INT64", "dims": ["3"]}]}
    assert documents.parse_model_config(doc).schema.inputs == [TensorSpec(name="x", dtype="INT64", shape=[-1, 3])]


def test_server_metadata_round_trip() -> None:
    doc = documents.server_metadata("aimass", "1.2.3")
    assert orjson.dumps(doc) == (
        b'{"name":"aimass","version":"1.2.3","extensions":["binary_tensor_data","model_repository","model_configuration"]}'
    )
    info = documents.parse_server_metadata(_wire(doc), "http://s/v2")
    assert (info.name, info.version, info.extensions) == ("aimass", "1.2.3", documents.EXTENSIONS)
    assert info.supports(documents.BINARY_TENSOR_DATA)
    # MLServer: no binary extension; a server that omits the list announces nothing.
    assert not documents.parse_server_metadata({"name": "mlserver", "extensions": []}).supports("binary_tensor_data")
    assert documents.parse_server_metadata({}).extensions == ()


def test_repository_index_round_trip() -> None:
    docs = [
        documents.index_entry("mlp", "1"),
        documents.index_entry("mlp", "2", documents.UNAVAILABLE, "unloaded"),
    ]
    assert orjson.dumps(docs) == (
        b'[{"name":"mlp","version":"1","state":"READY"},'
        b'{"name":"mlp","version":"2","state":"UNAVAILABLE","reason":"unloaded"}]'
    )
    entries = documents.parse_repository_index(_wire(docs), "http://s/v2/repository/index")
    assert [(e.name, e.version, e.state, e.reason, e.ready) for e in entries] == [
        ("mlp", "1", "READY", None, True),
        ("mlp", "2", "UNAVAILABLE", "unloaded", False),
    ]
    assert documents.parse_repository_index([{"name": "x"}])[0].version is None  # Triton: unloaded, no version


def test_index_request() -> None:
    assert documents.parse_index_request({"ready": True}) is True
    assert documents.parse_index_request({}) is False
    assert documents.parse_index_request([1]) is False


def test_mlserver_metadata_without_tensors() -> None:
    doc: dict[str, Any] = {"name": "m", "versions": [], "platform": "", "inputs": None, "outputs": []}
    assert documents.parse_model_metadata(doc, URL).schema.inputs == []
    with pytest.raises(ModelLoadError, match=r"^http://peer\.test/v2/models/m: .*lists no inputs.*schema=Schema"):
        documents.schema_from_metadata(doc, URL)


_GOOD = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}


@pytest.mark.parametrize(
    ("doc", "field", "problem"),
    [
        ([_GOOD], None, "expected a JSON object, got list"),
        ({"inputs": {"x": _GOOD}}, "inputs", "expected a list, got dict"),
        ({"inputs": ["x"]}, "inputs[0]", "expected a JSON object, got 'x'"),
        ({"inputs": [{"datatype": "FP32", "shape": [1]}]}, "inputs[0].name", "missing"),
        ({"inputs": [{**_GOOD, "name": 3}]}, "inputs[0].name", "expected a string, got 3"),
        ({"inputs": [_GOOD, {**_GOOD, "name": "z", "datatype": "FP8"}]}, "inputs[1].datatype", "unknown tensor type"),
        ({"inputs": [{"name": "x", "shape": [1]}]}, "inputs[0].datatype", "expected a tensor type name, got null"),
        ({"inputs": [{**_GOOD, "shape": "[-1, 4]"}]}, "inputs[0].shape", "expected a list of integers"),
        ({"inputs": [{**_GOOD, "shape": [-2]}]}, "inputs[0].shape", "-1 \\(dynamic\\)"),
        ({"inputs": [{**_GOOD, "shape": [1.5]}]}, "inputs[0].shape", "expected integers"),
        ({"inputs": [{**_GOOD, "shape": [True]}]}, "inputs[0].shape", "expected integers"),
        ({"inputs": [_GOOD], "outputs": [{**_GOOD, "datatype": 7}]}, "outputs[0].datatype", "got 7"),
        ({"inputs": [_GOOD, _GOOD]}, "inputs", "duplicate tensor names \\['x'\\]"),
        ({"inputs": [_GOOD], "versions": "1"}, "versions", "expected a list"),
        ({"inputs": [_GOOD], "versions": [1]}, "versions[0]", "expected a string, got 1"),
        ({"inputs": [_GOOD], "platform": 1}, "platform", "expected a string"),
    ],
)
def test_malformed_model_metadata_names_url_and_field(doc: Any, field: str | None, problem: str) -> None:
    where = re.escape(f" field '{field}': " if field else ": ")
    with pytest.raises(ModelLoadError, match=rf"^http://peer\.test/v2/models/m: model metadata{where}.*{problem}"):
        documents.schema_from_metadata(doc, URL)


@pytest.mark.parametrize(
    ("parse", "doc", "message"),
    [
        (documents.parse_server_metadata, "ok", r"^U: server metadata: expected a JSON object"),
        (documents.parse_server_metadata, {"extensions": "binary"}, r"^U: server metadata field 'extensions'"),
        (documents.parse_model_config, {"max_batch_size": -1}, r"^U: model config field 'max_batch_size'"),
        (documents.parse_model_config, {"input": [{"name": "x", "data_type": "TYPE_X", "dims": [1]}]}, "input\\[0\\]"),
        (documents.parse_repository_index, {}, r"^U: repository index: expected a JSON list"),
        (documents.parse_repository_index, [{"state": "READY"}], r"field '\[0\]\.name': missing"),
        (documents.parse_repository_index, [{"name": "m", "version": 1}], r"field '\[0\]\.version'"),
    ],
)
def test_other_malformed_documents(parse: Any, doc: Any, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        parse(doc, "U")


def test_without_url_the_document_is_named() -> None:
    with pytest.raises(ModelLoadError, match=r"^model metadata field 'inputs\[0\]\.name': missing"):
        documents.parse_model_metadata({"inputs": [{}]})


def test_doctests() -> None:
    assert doctest.testmod(documents, raise_on_error=True).failed == 0
