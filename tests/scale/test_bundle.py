"""Models shipped to Ray workers as package bytes (no Ray needed): round trip, checksums, no path escape."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.errors import IntegrityError, ModelLoadError
from aimass.scale.bundle import Bundle, bundle, load_source


def test_model_package_and_file_round_trip(mlp: Model, tmp_path: Path) -> None:
    x = models.dataset(16)[0]
    want = mlp.predict(x)["y"]
    package = mlp.save(tmp_path / "pkg")
    for source in (mlp, package, str(models.onnx_mlp(tmp_path / "m.onnx"))):
        b = bundle(source, name="mlp")
        assert isinstance(b, Bundle) and "aimass.json" in b.files and b.size > 0
        np.testing.assert_array_equal(load_source(b).predict(x)["y"], want)
    assert bundle("http://mass:8000/v2/models/mlp") == "http://mass:8000/v2/models/mlp"


def test_tampered_or_escaping_bundles_are_refused(mlp: Model) -> None:
    b = bundle(mlp, name="mlp")
    assert isinstance(b, Bundle)
    artifact = next(k for k in b.files if k.endswith(".onnx"))
    tampered = dataclasses.replace(b, files={**b.files, artifact: b.files[artifact] + b"\0"})
    with pytest.raises(IntegrityError):
        tampered.load()
    escaping = dataclasses.replace(b, files={**b.files, "../evil.txt": b"x"})
    with pytest.raises(ModelLoadError, match="leaves the package directory"):
        escaping.load()
