"""Model: loading rules, detection errors, devices, predict_batch details."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import BackendNotFound, DeviceError, Model, ModelLoadError, SchemaError


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    pytest.importorskip("onnxruntime")
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("m") / "mlp.onnx"))


def test_unknown_object_names_its_type() -> None:
    with pytest.raises(BackendNotFound, match="no backend recognises object of type builtins.dict"):
        Model.load({"not": "a model"})


def test_unknown_suffix(tmp_path: Path) -> None:
    f = tmp_path / "model.weird"
    f.write_bytes(b"x")
    with pytest.raises(BackendNotFound, match=r"suffix '.weird'"):
        Model.load(f)


def test_missing_file() -> None:
    with pytest.raises(ModelLoadError, match="no such model file or package: 'absent.onnx'"):
        Model.load("absent.onnx")


def test_unknown_backend_name(onnx_model: Model) -> None:
    with pytest.raises(BackendNotFound, match="no backend named 'nope'"):
        Model.load("x.onnx", backend="nope")


def test_garbage_onnx_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.onnx"
    f.write_bytes(b"definitely not protobuf")
    # Parsed by onnx first (external data is checked before onnxruntime sees the model).
    with pytest.raises(ModelLoadError, match="ONNX model 'bad.onnx' does not parse as an ONNX ModelProto"):
        Model.load(f)


def test_cuda_without_gpu_is_a_device_error(onnx_model: Model) -> None:
    with pytest.raises(DeviceError, match="cuda"):
        onnx_model.to("cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        onnx_model.to("tpu")


def test_loading_a_model_returns_it(onnx_model: Model) -> None:
    assert Model.load(onnx_model) is onnx_model


def test_schema_override(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = models.onnx_mlp(tmp_path / "m.onnx")
    m = Model.load(
        path,
        schema={
            "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "dtype": "FP32", "shape": [-1, 3]}],
        },
    )
    assert m.schema.inputs[0].shape == [-1, 4]


def test_predict_batch_bounded_and_progress(onnx_model: Model, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).standard_normal((1000, 4))  # float64: each slice is narrowed on its own
    out = onnx_model.predict_batch(x, batch_size=128, progress=True)
    np.testing.assert_allclose(out["y"], onnx_model.predict(x)["y"], rtol=1e-6)
    assert "1000/1000" in capsys.readouterr().err


def test_predict_batch_validates_each_slice(onnx_model: Model) -> None:
    with pytest.raises(SchemaError, match=r"input 'x': expected FP32 shape \[-1, 4\], got float64 shape \[10, 5\]"):
        onnx_model.predict_batch(np.zeros((30, 5)), batch_size=10)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        onnx_model.predict_batch(np.zeros((3, 4)), batch_size=0)


def test_repr_and_html(onnx_model: Model) -> None:
    assert "backend='onnx'" in repr(onnx_model)
    assert "<table>" in onnx_model._repr_html_()
