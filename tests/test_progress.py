"""Progress bars only on a terminal by default: logs and CI output get no bar lines; progress=True forces one."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.training import progress_bar

pytest.importorskip("onnxruntime")


def test_predict_batch_bar_only_when_asked_off_a_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    m = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    capfd.readouterr()
    default = m.predict_batch(x, batch_size=8)  # 8 batches, stderr captured: not a terminal
    assert capfd.readouterr().err == ""
    forced = m.predict_batch(x, batch_size=8, progress=True)
    assert "64/64" in capfd.readouterr().err  # the bar is still there for those who ask
    np.testing.assert_array_equal(default["y"], forced["y"])


def test_training_bar_follows_the_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    with progress_bar(320, "distill", progress=None) as bar:
        for _ in range(320):
            bar.update(1)
    assert capfd.readouterr().err == ""  # a distillation wrote 320 bar updates into a log
    assert progress_bar(1, "update", progress=None).disable
    forced = progress_bar(1, "update", progress=True)
    assert not forced.disable
    forced.close()
