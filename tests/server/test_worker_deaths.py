"""Worker processes that start slowly are not killed, and a worker's death is logged with its reason.

On a busy machine, ``aimass serve --workers 4 --grpc-port G`` logged "worker N died; a new one is
starting" in 2 starts of 3, with no reason: uvicorn's supervisor killed live workers that had not
answered its 5 s health check while they were still importing frameworks and loading models (a
thread holding the GIL answers nothing). Here each worker holds the GIL for longer than the health
check's timeout while it starts: none may be killed; then one is killed from outside, and the log
says how it ended.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import models
import psutil
import pytest
import serving

pytest.importorskip("onnxruntime")

TESTS = Path(__file__).resolve().parents[1]
SERVER = """
import logging, sys
import aimass.server.workers as workers
from helpers.slow_start import hold_gil
if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    workers.HEALTHCHECK_TIMEOUT = 1.0  # shorter than each worker's start, which holds the GIL for 2.5 s
    workers.serve_workers({"mlp": sys.argv[1]}, workers=2, port=int(sys.argv[2]), grpc_port=int(sys.argv[3]) or None,
                          setup=hold_gil)
"""


def _workers(server: subprocess.Popen[bytes]) -> set[int]:
    return {c.pid for c in psutil.Process(server.pid).children() if any("spawn_main" in part for part in c.cmdline())}


def _log_has(log: Path, pattern: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow  # about 10 s: two workers start, one restarts
def test_slow_starting_workers_live_and_a_death_says_why(tmp_path: Path) -> None:
    model = models.onnx_mlp(tmp_path / "mlp.onnx")
    port = serving.free_port()
    grpc_port = serving.free_port() if importlib.util.find_spec("grpc") else 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(model), str(port), str(grpc_port)], env=env, stdout=out, stderr=out
        )
    try:
        serving.wait_ready(f"http://127.0.0.1:{port}/v2/models/mlp/ready", timeout=90, process=server)
        deadline = time.monotonic() + 30
        while len(found := _workers(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # a few health-check rounds, each worker now serving
        assert "died" not in log.read_text() and "a new one is starting" not in log.read_text(), log.read_text()
        victim = min(found)
        os.kill(victim, signal.SIGKILL)
        assert _log_has(log, rf"worker {victim} was killed by signal SIGKILL.*a new one is starting", 20), (
            log.read_text()
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
