"""What the dashboard costs the inference path: the same server with the dashboard off, on, and on and watched.

A tiny ONNX MLP (4 -> 8 -> 3) published into a model library is served by three server processes
over the same library: ``create_app(dashboard=False)``; ``dashboard=True`` with nobody looking (its
sampler reads the request metrics every 2 s); and ``dashboard=True`` with a viewer polling what the
live page polls (``/dashboard/api/live`` every 2 s, as an open tab does) plus the models list.
A closed loop at concurrency 16 sends one-row JSON requests to each in turn, ``--repeats`` rounds
interleaved and rotated. Printed: requests/s, p50 and p99 per round, the medians, and the ratios
against "off" (1.00 = no cost).

Run:  .venv/bin/python benchmarks/dashboard_overhead.py [--seconds 4] [--repeats 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import models
from harness import free_port
from serve_throughput import Server, run_load  # the load generator every serving benchmark uses

MODES = ("off", "on", "watched")


def build_library(work: Path) -> Path:
    from aimass import Model
    from aimass.store import Store

    model = Model.load(models.onnx_mlp(work / "mlp.onnx"))
    Store(work / "lib").publish(model, "mlp", metrics={"accuracy": 0.9})
    return work / "lib"


def serve_process(library: str, port: int, dashboard: bool) -> None:
    """The server process: the app over the library, dashboard on or off (nothing else differs)."""
    from aimass.server import create_app, serve

    serve(create_app(repository=library, max_batch_size=0, dashboard=dashboard), port=port)


def viewer(port: int, every: float = 2.0) -> None:
    """What an open dashboard tab on the live page asks for (run in its own process, as a browser would be)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                client.get("/dashboard/api/live")
                client.get("/dashboard/api/models")
            time.sleep(every)


def in_process(versions: int = 20, samples: int = 150, n: int = 200) -> None:
    """The sampler's own costs, no network: one sample, and one live document over a full 5-minute ring."""
    from aimass.server.dashboard import LiveSampler
    from aimass.server.metrics import Metrics

    metrics = Metrics()
    clock = [0.0]
    live = LiveSampler(metrics.registry, interval=2.0, clock=lambda: clock[0])
    rng = np.random.default_rng(0)
    for i in range(samples):
        for v in range(versions):
            mm = metrics.model("m", str(v))
            for seconds in rng.exponential(0.002, 20):
                mm.requests.inc()
                mm.request_seconds.observe(seconds)
            mm.observe_batch(4, [0.0005] * 4, 0.001)
        clock[0] = 2.0 * i
        live.sample()
    t = time.perf_counter()
    for _ in range(n):
        clock[0] += 2.0
        live.sample()
    per_sample = (time.perf_counter() - t) / n
    clock[0] += 0.1  # under the minimum gap: series() reuses the last sample
    t = time.perf_counter()
    for _ in range(20):
        live.series(300.0)
    per_series = (time.perf_counter() - t) / 20
    print(
        f"in process, {versions} model versions: one sample {per_sample * 1e6:.0f} us "
        f"(every 2 s: {per_sample / 2.0:.2%} of one core, every 10 s: {per_sample / 10.0:.2%}); "
        f"one live document over {samples} samples "
        f"{per_series * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--view", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_process(args.library, args.port, args.serve == "on")
    if args.view:
        return viewer(args.view)
    library = build_library(Path(tempfile.mkdtemp(prefix="aimass-dashboard-")))
    row = [round(float(v), 6) for v in np.random.default_rng(0).standard_normal(4)]
    payload = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row}]}).encode()
    servers: dict[str, Server] = {}
    for mode in MODES:
        port = free_port()
        flag = "off" if mode == "off" else "on"
        cmd = [sys.executable, __file__, "--serve", flag, "--port", str(port), "--library", str(library)]
        servers[mode] = Server(f"dashboard-{mode}", cmd, port, "mlp")
    results: dict[str, list[tuple[float, float, float, int]]] = {m: [] for m in MODES}
    try:
        for s in servers.values():
            s.wait()
        for r in range(args.repeats):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:  # rotate who goes first
                watch = None
                if mode == "watched":
                    watch = subprocess.Popen([sys.executable, __file__, "--view", str(servers[mode].port)])
                try:
                    results[mode].append(run_load(servers[mode].url, payload, args.concurrency, args.seconds))
                finally:
                    if watch is not None:
                        watch.terminate()
                        watch.wait()
                rps, p50, p99, errors = results[mode][-1]
                print(f"dashboard {mode:>7}: {rps:7.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}")
                time.sleep(0.5)
    finally:
        for s in servers.values():
            s.stop()
    med = {m: [statistics.median(x[i] for x in results[m]) for i in range(3)] for m in MODES}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; c={args.concurrency}")
    for mode in MODES:
        rps, p50, p99 = med[mode]
        print(
            f"median {mode:>7}: {rps:7.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"req/s ratio to off {rps / med['off'][0]:.3f}  p50 ratio {p50 / med['off'][1]:.3f}"
        )
    in_process()


if __name__ == "__main__":
    main()
