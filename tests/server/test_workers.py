"""Worker processes under load: one request aborts its worker (a native crash), the other worker
keeps answering, the supervisor starts a new one, and only the requests in flight on the dead
worker fail. ``/metrics`` sums every worker, the dead one's counts included."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import psutil
import pytest
import serving
from helpers.crashing import CRASH_VALUE, save_crashing

from aimass import Model
from aimass.protocol import v2

pytest.importorskip("onnxruntime")

WORKERS = 2
CLIENTS = 6
TESTS = Path(__file__).resolve().parents[1]
SERVER = f"""
import sys
from helpers.crashing import register
from aimass.server.workers import serve_workers
serve_workers({{"crashy": sys.argv[1]}}, workers={WORKERS}, port=int(sys.argv[2]), setup=register, max_batch_size=8,
              max_queue_delay=0.0005, grpc_port=int(sys.argv[3]) or None)
"""
HAS_GRPC = importlib.util.find_spec("grpc") is not None


def _workers(server: subprocess.Popen[bytes]) -> set[int]:
    """PIDs of the worker processes (spawned children of the supervisor)."""
    found = set()
    for child in psutil.Process(server.pid).children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Model, int]]:
    tmp = tmp_path_factory.mktemp("workers")
    pkg = save_crashing(models.onnx_mlp(tmp / "m.onnx"), tmp / "pkg")
    port = serving.free_port()
    grpc_port = serving.free_port() if HAS_GRPC else 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(pkg), str(port), str(grpc_port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        serving.wait_ready(f"{base}/v2/models/crashy/ready", timeout=90, process=server)
        deadline = time.monotonic() + 30
        while len(_workers(server)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        yield base, server, Model.load(pkg), grpc_port
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _post(client: httpx.Client, base: str, x: np.ndarray) -> httpx.Response:
    body, headers = v2.encode_request({"x": x}, binary=True)
    return client.post(f"{base}/v2/models/crashy/infer", content=body, headers=headers)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_a_crashing_worker_is_replaced_and_only_its_requests_fail(
    served: tuple[str, subprocess.Popen[bytes], Model, int],
) -> None:
    base, server, local, grpc_port = served
    before = _workers(server)
    assert len(before) == WORKERS, before
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    want = local.predict(x)["y"]
    stop = threading.Event()
    records: list[tuple[float, float, str]] = []  # (start, end, "ok" | failure)

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    r = _post(c, base, x)
                    ok = r.status_code == 200 and np.allclose(v2.decode_response(r.content).outputs["y"], want)
                    outcome = "ok" if ok else f"HTTP {r.status_code}"
                except httpx.TransportError as e:
                    outcome = type(e).__name__
                records.append((start, time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    crash = x.copy()
    crash[0, 0] = CRASH_VALUE
    kill_start = time.monotonic()
    with httpx.Client(timeout=30) as c, pytest.raises(httpx.TransportError):
        _post(c, base, crash)  # its worker dies before answering
    kill_end = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _workers(server)
        if len(now) == WORKERS and now != before:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # some load on the restored pair
    stop.set()
    for t in threads:
        t.join(30)

    after = _workers(server)
    assert len(after) == WORKERS and len(after & before) == WORKERS - 1, (before, after)  # one replaced
    failures = [r for r in records if r[2] != "ok"]
    assert all(r[0] < kill_end for r in failures), f"a request sent after the crash failed: {failures}"
    assert all(r[2] != "HTTP 500" and not r[2].startswith("HTTP 4") for r in failures), failures
    assert len(failures) <= CLIENTS  # at most the requests that were in flight then
    during = [r for r in records if r[0] > kill_end and r[2] == "ok"]
    assert during, "nobody was answered after the crash"
    assert len([r for r in records if r[0] < kill_start and r[2] == "ok"]) > 10

    # The new worker serves: with the surviving one frozen, fresh connections can only reach it.
    survivor = next(iter(after & before))
    os.kill(survivor, signal.SIGSTOP)
    try:
        for _ in range(3):
            with httpx.Client(timeout=10) as c:
                r = _post(c, base, x)
                assert r.status_code == 200 and np.allclose(v2.decode_response(r.content).outputs["y"], want)
                assert c.get(f"{base}/v2/health/ready").status_code == 200
    finally:
        os.kill(survivor, signal.SIGCONT)
    if grpc_port:  # gRPC with workers: each binds the gRPC port itself (SO_REUSEPORT), so it is
        # checked after the survivor resumes: SO_REUSEPORT would hash some connections to the frozen one.
        remote = Model.load(f"grpc://127.0.0.1:{grpc_port}/crashy", options={"timeout": 10})
        for _ in range(2):
            np.testing.assert_allclose(remote.predict(x)["y"], want, rtol=1e-6)

    # /metrics: every worker's requests, the dead one's included; no in-flight gauge left behind by it.
    text = httpx.get(f"{base}/metrics", timeout=10).text
    counted = _metric(text, "aimass_requests_total")
    extra = 3 + (2 if grpc_port else 0)  # sent while the survivor was frozen, and over gRPC
    answered = len([r for r in records if r[2] == "ok"]) + extra
    assert answered <= counted <= len(records) + 1 + extra, (answered, counted, len(records))
    assert _metric(text, "aimass_requests_in_flight") == 0
    assert server.poll() is None


def test_serve_workers_option_starts_the_supervisor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``aimass serve --workers N`` loads nothing itself and hands every server option to the workers."""
    from typer.testing import CliRunner

    import aimass.server.workers
    from aimass.cli import app

    captured: dict[str, object] = {}

    def fake(models: object, **kwargs: object) -> None:
        captured.update(kwargs, models=models)

    monkeypatch.setattr(aimass.server.workers, "serve_workers", fake)
    args = ["serve", f"fraud={tmp_path}/nowhere", "--workers", "3", "--threads", "2", "--max-batch-size", "8"]
    grpc_port = serving.free_port()  # the CLI binds its ports before it starts anything: free ones
    result = CliRunner().invoke(app(), [*args, "--port", "0", "--grpc-port", str(grpc_port), "--option", "a.b=1"])
    assert result.exit_code == 0, result.output
    assert captured["models"] == {"fraud": f"{tmp_path}/nowhere"}  # not loaded here: each worker loads it
    settings: Any = captured["settings"]  # workers: processes; threads: each one's model threads
    assert settings.workers == 3 and settings.threads == 2 and settings.grpc_port == grpc_port
    assert settings.max_batch_size == 8 and captured["model_options"] == {"a": {"b": 1}}


def test_serve_workers_refuses_model_objects(tmp_path: Path) -> None:
    from aimass.server.workers import serve_workers

    model = Model.load(models.onnx_mlp(tmp_path / "m.onnx"))
    with pytest.raises(TypeError, match="worker processes load models from paths"):
        serve_workers({"m": model}, workers=2)  # type: ignore[dict-item]
