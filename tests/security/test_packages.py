"""Malicious packages: every name a package carries stays inside it and under its checksums."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.compose import ensemble
from aimass.errors import IntegrityError
from aimass.package import MANIFEST, MAX_MANIFEST_BYTES, read_manifest, verify, write_package

pytest.importorskip("onnxruntime")


def _package_with_subdir(tmp_path: Path) -> Path:
    """A valid package whose one artifact lives in a sub-directory: ``sub/model.onnx``."""
    source = models.onnx_mlp(tmp_path / "src.onnx")

    def write(d: Path) -> list[str]:
        (d / "sub").mkdir()
        shutil.copy(source, d / "sub" / "model.onnx")
        return ["sub/model.onnx"]

    m = Model.load(source)
    fields = {
        "backend": "onnx",
        "framework": "onnxruntime",
        "aimass_version": "0",
        "schema": m.schema.model_dump(),
    }
    return write_package(tmp_path / "pkg", write, fields)


def _rewrite_manifest(pkg: Path, edit: object) -> None:
    doc = json.loads((pkg / MANIFEST).read_text())
    edit(doc)  # type: ignore[operator]
    (pkg / MANIFEST).write_text(json.dumps(doc))


def test_a_symlinked_directory_below_the_package_is_refused(tmp_path: Path) -> None:
    pkg = _package_with_subdir(tmp_path)
    assert Model.load(pkg).schema.input_names == ["x"]
    outside = tmp_path / "outside"
    shutil.move(pkg / "sub", outside)  # same bytes, same checksum: only the link differs
    (pkg / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(IntegrityError, match="symbolic link"):
        Model.load(pkg)


def test_a_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    pkg = _package_with_subdir(tmp_path)
    shutil.move(pkg / MANIFEST, tmp_path / "elsewhere.json")
    (pkg / MANIFEST).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(IntegrityError, match="symbolic link"):
        verify(pkg)


@pytest.mark.parametrize(
    "name", ["../outside.onnx", "/etc/hostname", "sub/../../outside.onnx", "sub//model.onnx", "./x", "C:/x", "a\\b"]
)
def test_artifact_names_that_leave_the_package_are_refused_before_any_read(tmp_path: Path, name: str) -> None:
    pkg = _package_with_subdir(tmp_path)
    (tmp_path / "outside.onnx").write_bytes(b"not read")

    def edit(doc: dict) -> None:  # type: ignore[type-arg]
        doc["artifacts"].append({"path": name, "sha256": "0" * 64, "size": 8})

    _rewrite_manifest(pkg, edit)
    with pytest.raises(IntegrityError, match="plain relative path"):
        read_manifest(pkg)
    with pytest.raises(IntegrityError):
        Model.load(pkg)


def test_an_artifact_listed_twice_is_refused(tmp_path: Path) -> None:
    pkg = _package_with_subdir(tmp_path)
    _rewrite_manifest(pkg, lambda doc: doc["artifacts"].append(dict(doc["artifacts"][0])))
    with pytest.raises(IntegrityError, match="listed twice"):
        verify(pkg)


def test_an_oversized_manifest_is_refused_without_parsing(tmp_path: Path) -> None:
    pkg = _package_with_subdir(tmp_path)
    # Valid JSON that an unbounded reader would accept: the size alone decides.
    _rewrite_manifest(pkg, lambda doc: doc["metadata"].update(pad="x" * (MAX_MANIFEST_BYTES + 1)))
    with pytest.raises(IntegrityError, match="more than the limit"):
        Model.load(pkg)


def _fix_checksum(pkg: Path, name: str) -> None:
    data = (pkg / name).read_bytes()

    def edit(doc: dict) -> None:  # type: ignore[type-arg]
        for art in doc["artifacts"]:
            if art["path"] == name:
                art.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    _rewrite_manifest(pkg, edit)


@pytest.mark.parametrize("where", ["relative", "absolute", "unlisted"])
def test_a_compose_spec_cannot_point_outside_its_checksums(tmp_path: Path, where: str) -> None:
    a = Model.load(models.onnx_mlp(tmp_path / "a.onnx", seed=1))
    b = Model.load(models.onnx_mlp(tmp_path / "b.onnx", seed=2))
    pkg = ensemble(a, b).save(tmp_path / "pkg")
    x, _ = models.dataset(4)
    np.testing.assert_allclose(Model.load(pkg).predict(x)["y"], (a.predict(x)["y"] + b.predict(x)["y"]) / 2, 1e-6)

    evil = tmp_path / "elsewhere" / "evil.onnx"  # a file the manifest never checksummed
    evil.parent.mkdir()
    models.onnx_mlp(evil, seed=3)
    spec = json.loads((pkg / "compose.json").read_text())
    if where == "relative":
        spec["parts"][1]["artifacts"][0] = "../../../elsewhere/evil.onnx"
    elif where == "absolute":
        spec["parts"][1]["artifacts"][0] = str(evil)
    else:  # inside the package, but not in the manifest
        shutil.copy(evil, pkg / "parts" / "1" / "extra.onnx")
        spec["parts"][1]["artifacts"][0] = "extra.onnx"
    (pkg / "compose.json").write_text(json.dumps(spec))
    _fix_checksum(pkg, "compose.json")  # what an attacker who edits the package does
    verify(pkg)  # the manifest itself is consistent
    with pytest.raises(IntegrityError, match="composed model"):
        Model.load(pkg)
