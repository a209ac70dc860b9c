"""ONNX models whose weights live in a separate ``.data`` file: found, kept by save, carried by compress.

``torch.onnx.export`` writes ``encoder.onnx`` plus ``encoder.onnx.data`` even for a small MLP.
Such a model loads from any working directory (its data is read beside the file), is saved as one
self-contained, checksummed ``model.onnx`` (so a copied package keeps its weights), and compresses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import models
import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app
from aimass.onnx_external_data import external_tensors
from aimass.package import MANIFEST

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _with_external_data(directory: Path, name: str = "mlp.onnx") -> Path:
    """models.onnx_mlp saved as ``name`` + ``name.data`` (every initializer outside the .onnx file)."""
    directory.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(models.onnx_mlp(directory / "embedded.onnx", hidden=64)))
    (directory / "embedded.onnx").unlink()
    target = directory / name
    onnx.save_model(proto, str(target), save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    assert external_tensors(onnx.load(str(target), load_external_data=False))  # really external
    return target


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory beside the model's, not the model's own."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    """What onnxruntime computes given the model by its path (onnxruntime then reads the data beside it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": x})[0])


def test_loads_from_any_working_directory(tmp_path: Path, elsewhere: Path) -> None:
    path = _with_external_data(tmp_path / "fix")
    x = models.dataset(16)[0]
    m = Model.load("../fix/mlp.onnx")
    np.testing.assert_allclose(m.predict(x)["y"], _reference(path, x), rtol=1e-6)
    result = CliRunner().invoke(app(), ["info", "../fix/mlp.onnx"])
    assert result.exit_code == 0, result.output
    assert "External data path" not in result.output


def test_save_keeps_the_weights_and_a_copied_package_reloads(tmp_path: Path, elsewhere: Path) -> None:
    path = _with_external_data(tmp_path / "fix")
    x = models.dataset(16)[0]
    expected = _reference(path, x)
    Model.load(path).save(tmp_path / "pkg")
    # One self-contained model.onnx, checksummed: the weights are inside it, not behind a reference.
    manifest = json.loads((tmp_path / "pkg" / MANIFEST).read_text())
    assert [a["path"] for a in manifest["artifacts"]] == ["model.onnx"]
    saved = onnx.load(str(tmp_path / "pkg" / "model.onnx"), load_external_data=False)
    assert not external_tensors(saved)
    shutil.copytree(tmp_path / "pkg", tmp_path / "copy")
    shutil.rmtree(tmp_path / "fix")
    shutil.rmtree(tmp_path / "pkg")
    np.testing.assert_allclose(Model.load(tmp_path / "copy").predict(x)["y"], expected, rtol=1e-6)


def test_compress_and_fp16_carry_the_weights(tmp_path: Path, elsewhere: Path) -> None:
    path = _with_external_data(tmp_path / "fix")
    x = models.dataset(64)[0]
    m = Model.load(path)
    expected = _reference(path, x)
    for method in ("int8", "fp16"):
        q = m.compress(method, data=x, repeats=0)
        got = q.predict(x)["y"]
        cosine = np.sum(got * expected) / (np.linalg.norm(got) * np.linalg.norm(expected))
        assert cosine > 0.99, method
        q.save(tmp_path / method)
        np.testing.assert_array_equal(Model.load(tmp_path / method).predict(x)["y"], got)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="onnxscript not installed")
def test_a_torch_export_with_its_data_file(tmp_path: Path, elsewhere: Path) -> None:
    # What a user of torch 2.x gets from torch.onnx.export(..., "encoder.onnx"): two files.
    import torch

    net = models.torch_mlp(hidden=64).eval()
    (tmp_path / "fix").mkdir()
    with warnings.catch_warnings():  # torch's own deprecation notices, not ours to show
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            net,
            (torch.zeros(2, 4),),
            str(tmp_path / "fix" / "encoder.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim.AUTO},),
        )
    if not (tmp_path / "fix" / "encoder.onnx.data").exists():
        pytest.skip("this torch embeds the weights: nothing external to test")
    x = models.dataset(16)[0]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    m = Model.load(os.path.join("..", "fix", "encoder.onnx"))
    np.testing.assert_allclose(m.predict(x)["y"], expected, rtol=1e-4, atol=1e-5)
    m.save(tmp_path / "pkg")
    shutil.move(tmp_path / "pkg", tmp_path / "moved")
    shutil.rmtree(tmp_path / "fix")
    np.testing.assert_allclose(Model.load(tmp_path / "moved").predict(x)["y"], expected, rtol=1e-4, atol=1e-5)
    assert Model.load(tmp_path / "moved").compress("int8", data=x, repeats=0).predict(x)["y"].shape == (16, 3)
