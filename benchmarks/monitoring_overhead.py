"""The cost of monitoring served traffic (``--monitor all`` vs ``off``), and of payload logs per request.

A tiny ONNX MLP (4 -> 8 -> 3), published into a model library with a reference profile, is served
twice by ``aimass serve`` (two processes, same library): once feeding every request to its drift
monitor, once not. A closed loop at concurrency 16 sends one-row JSON requests to each in turn,
``--repeats`` rounds interleaved (on, off, on, off ...), and a scrape of ``/metrics`` every
``--scrape-every`` seconds on both (statistics are computed on scrape or in batches off the
request path). Printed: requests/s and p99 per round, the medians, and the throughput ratio
on/off (the target is a cost under 5 %).

Run:  .venv/bin/python benchmarks/monitoring_overhead.py [--seconds 5] [--repeats 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import models
from serve_throughput import Server, aimass_server, run_load  # the load generator every serving benchmark uses


def build_library(work: Path) -> Path:
    from aimass import Model
    from aimass.store import Store

    model = Model.load(models.onnx_mlp(work / "mlp.onnx"))
    x_train, _ = models.dataset(2000, seed=0)
    Store(work / "lib").publish(model, "mlp", reference=x_train)
    return work / "lib"


def body(rng: np.random.Generator) -> bytes:
    row = [round(float(v), 6) for v in rng.standard_normal(4)]
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row}]}).encode()


def scraper(port: int, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def measure(server: Server, payload: bytes, args: argparse.Namespace) -> tuple[float, float, int]:
    stop = threading.Event()
    thread = threading.Thread(target=scraper, args=(server.port, args.scrape_every, stop), daemon=True)
    thread.start()
    try:
        rps, _p50, p99, errors = run_load(server.url, payload, args.concurrency, args.seconds)
    finally:
        stop.set()
        thread.join()
    return rps, p99, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--scrape-every", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aimass-monitoring-"))
    lib = build_library(work)
    payload = body(np.random.default_rng(0))
    servers = {
        "on": aimass_server("monitor-on", lib, "mlp", "--monitor", "all", "--max-batch-size", "0"),
        "off": aimass_server("monitor-off", lib, "mlp", "--monitor", "off", "--max-batch-size", "0"),
    }
    results: dict[str, list[tuple[float, float, int]]] = {"on": [], "off": []}
    try:
        for s in servers.values():
            s.wait()
        for _ in range(args.repeats):
            for name in ("on", "off"):
                results[name].append(measure(servers[name], payload, args))
                rps, p99, errors = results[name][-1]
                print(f"monitor {name:>3}: {rps:7.0f} req/s  p99 {p99:6.2f} ms  errors {errors}", flush=True)
                time.sleep(0.5)
        report = httpx.get(f"http://127.0.0.1:{servers['on'].port}/v2/models/mlp/monitor", timeout=10).json()
    finally:
        for s in servers.values():
            s.stop()
    on = statistics.median(r[0] for r in results["on"])
    off = statistics.median(r[0] for r in results["off"])
    p99_on = statistics.median(r[1] for r in results["on"])
    p99_off = statistics.median(r[1] for r in results["off"])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; c={args.concurrency}")
    print(f"median req/s: monitor on {on:.0f}, off {off:.0f}; on/off = {on / off:.3f}")
    print(f"median p99: on {p99_on:.2f} ms, off {p99_off:.2f} ms")
    print(f"monitor saw {report['requests']} requests; window {report['window_rows']} rows")
    per_request_cost(lib, args.repeats)


def per_request_cost(lib: Path, repeats: int, n: int = 20000) -> None:
    """In process, no network: the model version's ``infer`` with and without its monitor, interleaved."""
    from concurrent.futures import ThreadPoolExecutor

    from aimass.server.metrics import Metrics
    from aimass.server.repository import BatchingConfig, Repository

    repo = Repository(lib, executor=ThreadPoolExecutor(2), metrics=Metrics(), batching=BatchingConfig(max_batch_size=0))
    served = repo.get("mlp", None)
    monitor = served.monitor
    x = {"x": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)}

    async def loop(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            await served.infer(x)
        return (time.perf_counter() - start) / k

    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(repeats * 2):
        for name in ("on", "off"):
            served.monitor = monitor if name == "on" else None
            times[name].append(asyncio.run(loop(n)))
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    extra = (on - off) * 1e6
    print(f"in process, per request: infer {off * 1e6:.1f} us, with monitor {on * 1e6:.1f} us: +{extra:.1f} us")
    payload_log_cost(x, served.model.predict(x), n)


def payload_log_cost(x: dict[str, np.ndarray], y: dict[str, np.ndarray], n: int) -> None:
    """What ``--log-payloads`` adds to a request: the sampling draw, the record, the queue put."""
    from aimass.server.payload_log import PayloadLog

    plog = PayloadLog(tempfile.mkdtemp(prefix="aimass-payloads-"), max_queue=n + 1)
    start = time.perf_counter()
    for i in range(n):
        if plog.sampled():
            plog.log("mlp", "1", str(i), x, y, 0.001)
    per = (time.perf_counter() - start) / n
    plog.close()
    counts = f"{plog.logged} logged, {plog.dropped} dropped"
    print(f"payload log, on the request path: {per * 1e6:.1f} us per request ({counts})")


if __name__ == "__main__":
    main()
