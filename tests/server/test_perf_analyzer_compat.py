"""Triton's ``perf_analyzer`` (C++ client, from the ``tritonclient==2.51.0`` wheel) against our server:
it reads ``GET /v2/models/<m>/config`` and drives ``infer`` with binary tensors.

Marked ``peer``: needs ``benchmarks/.peers/perf`` (``pip install tritonclient[http]==2.51.0
nvidia-cuda-runtime-cu12``, whose libcudart it links) and the system's libb64 (Debian: libb64-0d).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import models
import pytest
import serving

from aimass import Model
from aimass.server import create_app

VENV = Path(__file__).resolve().parents[2] / "benchmarks" / ".peers" / "perf"
TOOL = VENV / "bin" / "perf_analyzer"


@pytest.mark.peer
@pytest.mark.slow
def test_perf_analyzer_runs_against_our_server(tmp_path: Path) -> None:
    if not TOOL.exists():
        pytest.skip("benchmarks/.peers/perf (tritonclient 2.51.0) not installed")
    libs = sorted(VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(p) for p in libs)}
    if subprocess.run([str(TOOL), "--version"], env=env, capture_output=True).returncode == 127:
        pytest.skip("perf_analyzer cannot load its shared libraries (libb64, libcudart)")
    model = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    with serving.live_server(create_app({"mlp": model})) as address:
        out = subprocess.run(
            [str(TOOL), "-m", "mlp", "-u", address, "-i", "http", "--concurrency-range", "2",
             "--measurement-interval", "500", "--stability-percentage", "90", "--max-trials", "4"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert "Throughput:" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "error" not in out.stderr.lower(), out.stderr[-2000:]
