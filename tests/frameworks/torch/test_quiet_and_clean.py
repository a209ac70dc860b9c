"""torch -> ONNX export and torchao int8 print nothing about torch itself and leave nothing in TMPDIR.

Each case runs in a fresh interpreter whose stdout and stderr are this process's (captured by
``capfd``): torchao and torch's exporter say what they say once per process, on first import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

# What torch 2.13, torchao and onnxruntime printed or left before (issue 26, items 7 and 8).
NOISE = ("torchvision", "Failed to load", "triton", "register_constant", "FutureWarning", "Warning")


def _run(step: str, tmpdir: Path) -> None:
    code = f"""
        import numpy as np, torch
        from aimass import Model
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
        x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
        m = Model.load(net, example_input={{"x": x[:2]}})
        out = {step}
        print("ok", out.backend_name)
    """
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True, timeout=120)


@pytest.mark.slow  # two fresh interpreters importing torch: about 8 s of CPU each
def test_export_to_onnx_is_quiet_and_clean(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _run('m.convert("onnx", data=x)', tmp_path)
    out, err = capfd.readouterr()
    assert out.strip() == "ok onnx"
    assert not [word for word in NOISE if word in err], err
    assert list(tmp_path.iterdir()) == []  # no torchinductor_<user>, no onnxruntime .ses


@pytest.mark.slow
def test_torchao_int8_is_quiet_and_clean(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchao")
    _run('m.compress("int8", data=x)', tmp_path)
    out, err = capfd.readouterr()
    assert out.strip() == "ok torch"
    assert not [word for word in NOISE if word in err], err
    assert list(tmp_path.iterdir()) == []
