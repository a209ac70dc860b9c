"""The example scripts run as a user runs them: a fresh interpreter, exit code 0, the output they promise.

``examples/library_flow.py`` runs in ``test_library_flow.py``. Each script here writes under
``tempfile.mkdtemp()``, pointed at a directory of the test's own through ``TMPDIR``, and must leave
it empty: its own directory removed, and nothing from the frameworks (torchinductor_<user>,
onnxruntime's .ses). The quickstart keeps its packages and says where.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path, timeout: float, *, keeps: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMASS_")}  # no outside config or URIs
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env.update(
        TMPDIR=str(tmpdir),
        AIMASS_STORE=str(tmp_path / "lib"),
        AIMASS_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    left = sorted(p.name for p in tmpdir.iterdir())
    assert len(left) == keeps and all(name.startswith("aimass-") for name in left), f"{script} left {left} in TMPDIR"
    return proc.stdout


def test_serve_and_call(tmp_path: Path) -> None:
    out = _run("serve_and_call.py", tmp_path, timeout=120)
    lines = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in out.splitlines() if line.strip()}
    assert lines["schema"] == "(x: FP32 [-1, 4]) -> (p: FP32 [-1, 1])", out
    assert lines["remote"] == lines["local"], out  # served over HTTP: the very numbers of the local model
    assert len(re.findall(r"\d\.\d+", lines["remote"])) == 3, out
    assert "input 'x': expected FP32 shape [-1, 4], got float32 shape [2, 5]" in out
    assert lines["config"] == "onnx" and lines["env"] == "remote", out


@pytest.mark.slow
def test_quickstart(tmp_path: Path) -> None:
    out = _run("quickstart.py", tmp_path, timeout=600, keeps=True)  # its packages, printed below
    frameworks = ["torch", "onnx", "xgboost", "keras", "savedmodel", "tflite", "mxnet"]
    table = out[out.index("framework  backend") :].splitlines()[1:]
    rows = {line.split()[0]: line.split() for line in table if line.split() and line.split()[0] in frameworks}
    for name in frameworks:
        if f"== {name}: skipped" in out:
            continue  # its framework is not installed here
        assert name in rows, f"{name} neither ran nor was skipped:\n{out}"
        _, _backend, accuracy, identical, _seconds = rows[name]
        assert identical == "True", rows[name]
        assert float(accuracy) > 0.8, rows[name]  # a trained model, not noise
    assert rows, out
    assert f"packages written under {tmp_path / 'tmp'}" in out


def test_text_moderation(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tritonclient.http")
    out = _run("text_moderation.py", tmp_path, timeout=120)
    lines = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in out.splitlines() if line.strip()}
    assert lines["schema"] == "(text: BYTES [-1]) -> (label: BYTES [-1], probabilities: FP32 [-1, 2])", out
    assert lines["held-out"] == "accuracy 1.00", out  # trained, not noise: unseen posts labelled right
    assert lines["local"].split()[:4] == ["friendly", "toxic", "friendly", "toxic"], out
    # the same labels and probabilities through every client: aimass remote, tritonclient JSON and binary
    for way in ("remote", "triton-json", "triton-binary"):
        assert lines[way] == lines["local"], (way, out)
    assert lines["concurrent"] == "64/64 own answers True", out
    assert "input 'text': expected BYTES shape [-1], got float64 shape [2]: numbers are not BYTES" in out


def test_image_classifier(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    pytest.importorskip("tritonclient.http")
    out = _run("image_classifier.py", tmp_path, timeout=180)
    lines = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in out.splitlines() if line.strip()}
    assert float(lines["accuracy"]) >= 0.9, out  # a trained CNN on fresh drawings, not chance (0.33)
    assert lines["local"] == "circle square triangle", out  # the first three drawings, in that order
    assert lines["refused"] == "UntrustedCode code/image_classifier.py", out
    assert lines["loaded"] == lines["local"], out
    assert lines["remote"] == "circle square triangle same", out  # every label of every image, served
    assert lines["triton"] == lines["local"], out  # stock tritonclient, binary BYTES
    assert "input 'image': element 0 is not a JPEG or PNG image (UnidentifiedImageError)" in lines["bad"], out


@pytest.mark.slow
def test_serve_log_update(tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    pytest.importorskip("pyarrow")
    out = _run("serve_log_update.py", tmp_path, timeout=180)
    assert "served 150 requests with fraud:1" in out, out
    assert "logged 1500 rows from 150 requests" in out, out  # every request and every row, read back
    served, updated = map(float, re.findall(r"served model ([\d.]+), updated ([\d.]+)", out)[0])
    assert updated > served + 0.1, out  # the update learned the new world from the logged traffic
    assert "production is fraud:2" in out and "the server answers production with fraud:2" in out, out
