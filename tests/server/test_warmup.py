"""Warm-up on load: generated or recorded inputs, per-package opt-out, failures that do not stop serving."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.server import create_app
from aimass.server.warmup import warm_up, warmup_inputs


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.onnx_mlp(tmp_path_factory.mktemp("warm") / "mlp.onnx")


def _package(model: Model, path: Path, **serving_settings: object) -> Path:
    if serving_settings:
        model.metadata["serving"] = dict(serving_settings)
    model.save(path)
    return path


def test_versions_warm_up_as_they_load(tmp_path: Path, mlp_file: Path) -> None:
    root = tmp_path / "repo"
    _package(Model.load(mlp_file), root / "plain" / "1")
    _package(Model.load(mlp_file), root / "private" / "1", warmup=False)  # must not see synthetic input
    _package(Model.load(mlp_file), root / "sample_only" / "1", warmup="sample")  # has no recorded sample
    Model.load(serving.onnx_reshape_fails(tmp_path / "f.onnx")).save(root / "fails" / "1")
    app = create_app(repository=root)
    by_name = {s.name: s for s in app.repository.loaded()}
    plain = by_name["plain"].warmup
    assert plain is not None and plain.source == "generated" and plain.error is None and plain.seconds > 0
    assert by_name["private"].warmup is None
    assert by_name["sample_only"].warmup is None
    # A model that refuses the generated input (2 rows do not reshape to [-1, 3]) is served anyway.
    failed = by_name["fails"].warmup
    assert failed is not None and failed.error is not None and "fails" in {s.name for s in app.repository.loaded()}
    off = create_app(repository=root, warmup=False)
    assert all(s.warmup is None for s in off.repository.loaded())


def test_recorded_example_is_the_warmup_input(tmp_path: Path, mlp_file: Path) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    Model.load(mlp_file, example_input={"x": x}).save(tmp_path / "pkg")
    loaded = Model.load(tmp_path / "pkg")
    found = warmup_inputs(loaded)
    assert found is not None
    inputs, source = found
    assert source == "sample"
    np.testing.assert_array_equal(inputs["x"], x)
    result = warm_up(loaded)
    assert result is not None and result.source == "sample" and result.error is None
