"""Schema: dtype names, validation and the documented casting rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aimass import DType, Schema, SchemaError, TensorSpec


@pytest.fixture
def schema() -> Schema:
    return Schema(
        inputs=[
            TensorSpec(name="x", dtype="FP32", shape=[-1, 3]),
            TensorSpec(name="ids", dtype=DType.INT32, shape=[-1]),
        ],
        outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1])],
    )


@pytest.mark.parametrize(
    ("v2", "np_dtype"),
    [
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
    ],
)
def test_dtype_round_trip(v2: str, np_dtype: type) -> None:
    assert DType(v2).numpy == np.dtype(np_dtype)
    assert DType.from_numpy(np_dtype) is DType(v2)
    assert DType.parse(np.dtype(np_dtype).name) is DType(v2)
    assert DType.parse(f"TYPE_{v2}") is DType(v2)


def test_bytes_dtype() -> None:
    assert DType.from_numpy(np.dtype("U3")) is DType.BYTES
    assert DType.from_numpy(object) is DType.BYTES
    assert DType.BYTES.itemsize == 0


def test_unknown_dtype() -> None:
    with pytest.raises(SchemaError, match="unknown tensor type 'FLOAT128'"):
        DType.parse("FLOAT128")


def test_tensor_spec_rejects_bad_dims() -> None:
    with pytest.raises(ValueError, match="dimensions must be >= 0 or -1"):
        TensorSpec(name="x", dtype="FP32", shape=[-2])


def test_duplicate_names_rejected() -> None:
    spec = TensorSpec(name="x", dtype="FP32", shape=[-1])
    with pytest.raises(ValueError, match="duplicate tensor names"):
        Schema(inputs=[spec, spec])


def test_coerce_passes_exact_arrays_without_copy(schema: Schema) -> None:
    x = np.zeros((2, 3), np.float32)
    ids = np.zeros(2, np.int32)
    out = schema.coerce({"x": x, "ids": ids})
    assert out["x"] is x and out["ids"] is ids


def test_float64_narrows_and_int_widens(schema: Schema) -> None:
    out = schema.coerce({"x": np.ones((2, 3)), "ids": np.array([1, 2], np.int16)})
    assert out["x"].dtype == np.float32 and out["ids"].dtype == np.int32


def test_int_narrowing_checks_values(schema: Schema) -> None:
    ok = schema.coerce({"x": np.ones((2, 3)), "ids": np.array([1, 2], np.int64)})
    assert ok["ids"].dtype == np.int32
    with pytest.raises(SchemaError, match=r"input 'ids': expected INT32 shape \[-1\], got int64 shape \[1\]: values"):
        schema.coerce({"x": np.ones((1, 3)), "ids": np.array([2**40])})


def test_float_to_int_refused(schema: Schema) -> None:
    with pytest.raises(SchemaError, match=r"input 'ids': expected INT32 shape \[-1\], got float64 shape \[2\]"):
        schema.coerce({"x": np.ones((2, 3)), "ids": np.array([1.0, 2.5])})


def test_bool_only_from_bool() -> None:
    s = Schema(inputs=[TensorSpec(name="m", dtype="BOOL", shape=[-1])])
    assert s.coerce(np.array([True, False]))["m"].dtype == np.bool_
    with pytest.raises(SchemaError, match="only bool casts to BOOL"):
        s.coerce(np.array([1, 0]))


def test_bytes_inputs() -> None:
    s = Schema(inputs=[TensorSpec(name="text", dtype="BYTES", shape=[-1])])
    assert s.coerce(["a", "b"])["text"].dtype == object
    with pytest.raises(SchemaError, match="numbers are not BYTES"):
        s.coerce(np.array([1.0]))


def test_ragged_list_is_a_schema_error() -> None:
    s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 2])])
    with pytest.raises(SchemaError, match="not a rectangular array"):
        s.coerce([[1.0, 2.0], [3.0]])


def test_dataframe_single_2d_input() -> None:
    s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 2])])
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    np.testing.assert_array_equal(s.coerce(df)["x"], np.array([[1, 3], [2, 4]], np.float32))


def test_dataframe_columns_by_name(schema: Schema) -> None:
    df = pd.DataFrame({"ids": [1, 2]})
    with pytest.raises(SchemaError, match=r"missing input 'x' \(expected FP32 \[-1, 3\]\): DataFrame columns"):
        schema.coerce(df)
    s = Schema(
        inputs=[TensorSpec(name="a", dtype="FP32", shape=[-1]), TensorSpec(name="b", dtype="INT64", shape=[-1, 1])]
    )
    out = s.coerce(pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]}))
    assert out["a"].shape == (2,) and out["b"].shape == (2, 1)


def test_multi_input_needs_dict(schema: Schema) -> None:
    with pytest.raises(SchemaError, match=r"model has 2 inputs \['x', 'ids'\]: pass a dict"):
        schema.coerce(np.zeros((2, 3)))


def test_example_matches_schema(schema: Schema) -> None:
    ex = schema.example(batch=5)
    assert schema.coerce(ex)["x"].shape == (5, 3)


def test_schema_json_round_trip(schema: Schema) -> None:
    assert Schema.model_validate_json(schema.model_dump_json()) == schema
    assert "x: FP32 [-1, 3]" in str(schema)
    assert "<table>" in schema._repr_html_()
