"""The example scripts run as a user runs them: a fresh interpreter, exit code 0, the output they promise.

``examples/library_flow.py`` runs in ``test_library_flow.py``. Each script here writes under
``tempfile.mkdtemp()``, pointed at the test's own directory through ``TMPDIR``, so nothing is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMASS_")}  # no outside config or URIs
    env.update(
        TMPDIR=str(tmp_path),
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
    out = _run("quickstart.py", tmp_path, timeout=600)
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
    assert f"packages written under {tmp_path}" in out
