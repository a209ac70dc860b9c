"""`aimass compress | convert` through the real typer app: packages written, reports printed, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app
from aimass.package import verify

runner = CliRunner()
pytest.importorskip("onnxruntime")


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_compress_writes_package_and_report(tmp_path: Path) -> None:
    onnx_file = models.onnx_mlp(tmp_path / "mlp.onnx", hidden=32)
    x, y = models.dataset(64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, _ = cli(
        "compress", str(onnx_file), "--method", "int8", "--data", str(tmp_path / "x.npy"),
        "--labels", str(tmp_path / "y.npy"), "--output", str(tmp_path / "q"), "--json",
    )  # fmt: skip
    assert code == 0, out
    body = json.loads(out)
    artifacts = verify(tmp_path / "q").artifacts
    assert body["report"]["size_after"] == sum((tmp_path / "q" / a.path).stat().st_size for a in artifacts)
    assert body["report"]["metric"] == "accuracy" and body["backend"] == "onnx"
    q = Model.load(tmp_path / "q")
    assert q.predict(x)["y"].shape == (64, 3)
    # A refused compression exits non-zero and says why, with the report.
    code, _, err = cli(
        "compress", str(onnx_file), "--method", "int8", "--data", str(tmp_path / "x.npy"),
        "--labels", str(tmp_path / "y.npy"), "--max-drop", "-1", "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert code != 0 and "rejected" in err and not (tmp_path / "r").exists()


def test_refused_compression_prints_the_report_as_a_table(tmp_path: Path) -> None:
    onnx_file = models.onnx_mlp(tmp_path / "mlp.onnx", hidden=32)
    x, y = models.dataset(64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = ["compress", str(onnx_file), "--method", "int8", "--data", str(tmp_path / "x.npy")]
    args += ["--labels", str(tmp_path / "y.npy"), "--max-drop", "-1", "--output", str(tmp_path / "r")]
    code, out, err = cli(*args)
    lines = err.splitlines()
    assert code == 2 and out == "", err
    # Why, on the first line; then the report, one row a line, as a kept result prints it (not one long line).
    assert lines[0].startswith("error: int8 rejected: accuracy dropped by") and "compress int8" not in lines[0]
    assert lines[1] == "compress int8: onnx -> onnx", err
    assert any(line.split()[:2] == ["metric", "accuracy"] for line in lines), err
    assert [line.split()[0] for line in lines[2:5]] == ["size", "latency", "latency"], err
    # --json: the report as JSON on stdout for scripts, the reason on stderr, the same exit code.
    code, out, err = cli(*args, "--json")
    assert code == 2 and err.startswith("error: int8 rejected") and len(err.splitlines()) == 1
    body = json.loads(out)
    assert body["rejected"] == err.strip().removeprefix("error: ") and body["report"]["metric"] == "accuracy"


def test_compress_leaves_tmpdir_empty_and_stderr_quiet(tmp_path: Path) -> None:
    # A fresh `aimass compress`, as a user runs it: onnxruntime wrote its .ses session file into TMPDIR.
    onnx_file = models.onnx_mlp(tmp_path / "mlp.onnx", hidden=32)
    np.save(tmp_path / "x.npy", models.dataset(64)[0])
    (tmp_path / "tmp").mkdir()
    data, out = str(tmp_path / "x.npy"), str(tmp_path / "q")
    args = ["compress", str(onnx_file), "--method", "int8", "--data", data, "--output", out]
    proc = subprocess.run(
        [sys.executable, "-m", "aimass", *args],
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "compress int8: onnx -> onnx" in proc.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


def test_convert_prints_report(tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    models.xgb_classifier(3).get_booster().save_model(str(tmp_path / "clf.json"))
    code, out, _ = cli("convert", str(tmp_path / "clf.json"), "--to", "onnx", "--output", str(tmp_path / "o"))
    assert code == 0 and "convert onnx: xgboost -> onnx" in out and "tolerance" in out
    assert Model.load(tmp_path / "o").backend_name == "onnx"
    code, _, err = cli("convert", str(tmp_path / "clf.json"), "--to", "tflite", "--output", str(tmp_path / "t"))
    assert code != 0 and "supported" in err
