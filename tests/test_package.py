"""Packages: atomic writes, manifest content, and refusal of tampered or half-written packages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import BackendNotFound, IntegrityError, Model, ModelLoadError
from aimass.package import MANIFEST, read_manifest, verify


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    pytest.importorskip("onnxruntime")
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("m") / "mlp.onnx"))


def test_manifest_records_schema_backend_versions_checksums(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    m = read_manifest(path)
    assert m.backend == "onnx" and m.framework == "onnxruntime" and m.framework_version
    assert m.model_schema == onnx_model.schema
    assert [a.path for a in m.artifacts] == ["model.onnx"]
    assert m.artifacts[0].size == (path / "model.onnx").stat().st_size
    assert m.created.tzinfo is not None
    raw = json.loads((path / MANIFEST).read_text())
    assert raw["schema"]["inputs"][0] == {"name": "x", "dtype": "FP32", "shape": [-1, 4]}


def test_save_leaves_no_temporary_directories(onnx_model: Model, tmp_path: Path) -> None:
    onnx_model.save(tmp_path / "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_save_refuses_to_overwrite_unless_asked(onnx_model: Model, tmp_path: Path) -> None:
    onnx_model.save(tmp_path / "pkg")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        onnx_model.save(tmp_path / "pkg")
    onnx_model.save(tmp_path / "pkg", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    verify(tmp_path / "pkg")


def test_failed_save_keeps_old_package_and_leaves_nothing(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    before = (path / MANIFEST).read_text()

    def boom(directory: Path) -> list[str]:
        (directory / "partial.bin").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    from aimass.package import write_package

    with pytest.raises(OSError, match="No space left"):
        write_package(path, boom, {}, overwrite=True)
    assert (path / MANIFEST).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_missing_manifest_is_half_written(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    (path / MANIFEST).unlink()
    with pytest.raises(BackendNotFound, match="directory 'pkg' .*not an aimass package.*no aimass.json"):
        Model.load(path)


def test_truncated_artifact(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    data = (path / "model.onnx").read_bytes()
    (path / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match=r"artifact 'model.onnx' has \d+ bytes, manifest says \d+"):
        Model.load(path)


def test_missing_artifact(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    (path / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="artifact 'model.onnx' is missing"):
        Model.load(path)


def test_corrupt_manifest(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(IntegrityError, match="manifest is invalid"):
        Model.load(path)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd"])
def test_artifact_paths_cannot_leave_the_package(onnx_model: Model, tmp_path: Path, name: str) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    raw = json.loads((path / MANIFEST).read_text())
    raw["artifacts"][0]["path"] = name
    (path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="leaves the package directory"):
        Model.load(path)


def test_symlinked_artifact_refused(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    real = tmp_path / "elsewhere.onnx"
    os.replace(path / "model.onnx", real)
    (path / "model.onnx").symlink_to(real)
    with pytest.raises(IntegrityError, match="symbolic link"):
        Model.load(path)


def test_newer_format_refused(onnx_model: Model, tmp_path: Path) -> None:
    path = onnx_model.save(tmp_path / "pkg")
    raw = json.loads((path / MANIFEST).read_text())
    raw["format_version"] = 99
    (path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="has format 99"):
        Model.load(path)


def test_metadata_and_name_survive(onnx_model: Model, tmp_path: Path) -> None:
    m = Model(onnx_model.backend, name="fraud", metadata={"owner": "risk"})
    loaded = Model.load(m.save(tmp_path / "pkg"))
    assert loaded.name == "fraud" and loaded.metadata == {"owner": "risk"}
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(x)["y"], m.predict(x)["y"])
