"""Triton's ``perf_analyzer -i grpc`` (C++ client, from the ``tritonclient==2.51.0`` wheel) against our
gRPC server: it reads the model config over gRPC and drives ModelInfer with raw tensor contents.

Marked ``peer``: needs ``benchmarks/.peers/perf`` (see test_perf_analyzer_compat.py) and libb64.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import models
import pytest

from aimass import Model
from aimass.server import create_app

pytest.importorskip("grpc")
from aimass.server.grpc import BackgroundServer

VENV = Path(__file__).resolve().parents[2] / "benchmarks" / ".peers" / "perf"
TOOL = VENV / "bin" / "perf_analyzer"


@pytest.mark.peer
@pytest.mark.slow
def test_perf_analyzer_grpc_runs_against_our_server(tmp_path: Path) -> None:
    if not TOOL.exists():
        pytest.skip("benchmarks/.peers/perf (tritonclient 2.51.0) not installed")
    libs = sorted(VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(p) for p in libs)}
    if subprocess.run([str(TOOL), "--version"], env=env, capture_output=True).returncode == 127:
        pytest.skip("perf_analyzer cannot load its shared libraries (libb64, libcudart)")
    # Stability 1000 %: a compatibility check, not a measurement (shared CI cores never settle within 90 %).
    server = BackgroundServer(create_app({"mlp": Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))}))
    try:
        out = subprocess.run(
            [str(TOOL), "-m", "mlp", "-u", server.target, "-i", "grpc", "--concurrency-range", "2",
             "--measurement-interval", "500", "--stability-percentage", "1000", "--max-trials", "3"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    assert "Throughput:" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "error" not in out.stderr.lower(), out.stderr[-2000:]
