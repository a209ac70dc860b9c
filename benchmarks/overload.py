"""Overload: drive ``aimass`` at twice its measured capacity and check it degrades by refusing, not queueing.

A server process (uvicorn, one event loop, models in worker threads) serves a deep, narrow ONNX MLP
(4 -> 256 x 200 -> 2 by default, built here; its per-call cost makes capacity a few hundred requests per second
so that one Python load generator on the same machine can offer twice that). Steps:

1. capacity: closed loop at concurrency 16 for a few seconds, requests per second = C;
2. overload: an open loop offers 2 x C requests per second for ``--seconds`` (each request sent on
   schedule, whatever happened to the previous ones), against the server with a queue limit
   (``max_queue_size``) and, for contrast, the same server without one; a prober GETs
   ``/v2/health/ready`` every 20 ms meanwhile.

Reported per variant: requests offered, answered 200 (each checked against the model's output for
that input), refused 503 (each with ``Retry-After``), anything else; latency p50/p99 of accepted and
of refused requests; health-check p50/p99/max. Variants are interleaved and repeated
(``--repeats``); the medians are printed, plus the ratio of accepted p99 latency without/with the limit.

Run:  .venv/bin/python benchmarks/overload.py [--seconds 10] [--repeats 2] [--max-queue-size 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import N_FEATURES, deep_mlp_onnx, free_port

ROOT = Path(__file__).resolve().parents[1]

SERVER = """
import sys
from aimass.server import create_app, serve
repo, port, queue = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app(repository=repo, max_batch_size=0, max_queue_size=queue,
                 model_options={"session_options": {"intra_op_num_threads": 1}})
serve(app, port=port)
"""


def build_model(directory: Path, layers: int, width: int = 32) -> tuple[Path, Any]:
    """The deep MLP as a repository ``<dir>/repo/deep/1`` plus the loaded Model (to check answers)."""
    from aimass import Model

    deep_mlp_onnx(directory / "deep.onnx", layers, width)
    m = Model.load(directory / "deep.onnx")
    m.save(directory / "repo" / "deep" / "1", overwrite=True)
    return directory / "repo", m


class Server:
    def __init__(self, repo: Path, queue: int) -> None:
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-c", SERVER, str(repo), str(self.port), str(queue)]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        import httpx

        while True:
            try:
                if httpx.get(self.base + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e3


def bodies(n: int, model: Any) -> list[tuple[bytes, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x = rng.standard_normal((1, N_FEATURES)).astype(np.float32)
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x[0].tolist()}]})
        out.append((body.encode(), model.predict(x)["y"]))
    return out


async def capacity(base: str, work: list[tuple[bytes, np.ndarray]], seconds: float, concurrency: int = 16) -> float:
    import aiohttp

    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(stop: float) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                async with session.post(base + "/v2/models/deep/infer", data=work[i % len(work)][0]) as r:
                    await r.read()
                    done += r.status == 200
                i += 1

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(concurrency)))  # warm-up
        done = 0
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


async def overload(base: str, work: list[tuple[bytes, np.ndarray]], rate: float, seconds: float) -> dict[str, Any]:
    """Open loop at ``rate`` requests/s for ``seconds``, plus a health prober; every answer checked."""
    import aiohttp

    ok_lat: list[float] = []
    refused_lat: list[float] = []
    health: list[float] = []
    other: dict[str, int] = {}
    wrong = missing_retry = 0
    connector = aiohttp.TCPConnector(limit=4096)
    timeout = aiohttp.ClientTimeout(total=seconds * 6)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            nonlocal wrong, missing_retry
            body, want = work[i % len(work)]
            t0 = time.perf_counter()
            try:
                async with session.post(base + "/v2/models/deep/infer", data=body) as r:
                    data = await r.read()
                    status, retry = r.status, r.headers.get("retry-after")
            except Exception as e:
                other[type(e).__name__] = other.get(type(e).__name__, 0) + 1
                return
            took = time.perf_counter() - t0
            if status == 200:
                ok_lat.append(took)
                y = np.array(json.loads(data)["outputs"][0]["data"], np.float32).reshape(want.shape)
                wrong += not np.allclose(y, want, rtol=1e-5, atol=1e-5)
            elif status == 503:
                refused_lat.append(took)
                missing_retry += retry is None
            else:
                other[str(status)] = other.get(str(status), 0) + 1

        async def prober(stop: float) -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.get(base + "/v2/health/ready") as r:
                    await r.read()
                    if r.status == 200:
                        health.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)

        start = time.perf_counter()
        stop = start + seconds
        probe = asyncio.ensure_future(prober(stop))
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
        drained = time.perf_counter() - start
        await probe
    return {
        "offered": n,
        "offered_rate": n / sent_in,
        "ok": len(ok_lat),
        "refused": len(refused_lat),
        "other": other,
        "wrong": wrong,
        "missing_retry_after": missing_retry,
        "ok_p50": pct(ok_lat, 0.5),
        "ok_p99": pct(ok_lat, 0.99),
        "refused_p50": pct(refused_lat, 0.5),
        "refused_p99": pct(refused_lat, 0.99),
        "health_n": len(health),
        "health_p50": pct(health, 0.5),
        "health_p99": pct(health, 0.99),
        "health_max": pct(health, 1.0),
        "drain_s": drained - seconds,
        "goodput": len(ok_lat) / drained,
    }


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="overload duration per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", type=int, default=200, help="depth of the served MLP (sets the capacity)")
    ap.add_argument("--width", type=int, default=256, help="width of the served MLP")
    ap.add_argument("--max-queue-size", type=int, default=32)
    ap.add_argument("--factor", type=float, default=2.0, help="offered load / measured capacity")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo, model = build_model(Path(tmp), args.layers, args.width)
        work = bodies(256, model)
        variants = {f"max_queue_size={args.max_queue_size}": args.max_queue_size, "no limit": 0}
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
        caps: list[float] = []
        for rep in range(args.repeats):
            order = list(variants.items())
            random.Random(rep).shuffle(order)
            for name, queue in order:
                server = Server(repo, queue)
                try:
                    cap = run(capacity(server.base, work, 3.0))
                    caps.append(cap)
                    res = run(overload(server.base, work, args.factor * cap, args.seconds))
                    res["capacity"] = cap
                    results[name].append(res)
                    print(f"[{rep}] {name}: capacity {cap:.0f}/s -> {json.dumps(res, default=float)}", flush=True)
                finally:
                    server.stop()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; ", end="")
    print(
        f"{args.layers}x{args.width} MLP, offered {args.factor:g}x capacity for {args.seconds:g} s, "
        f"{args.repeats} runs each"
    )
    print(f"capacity (closed loop, c=16): median {statistics.median(caps):.0f} req/s")
    keys = ["offered", "ok", "refused", "wrong", "missing_retry_after", "ok_p50", "ok_p99", "refused_p50",
            "refused_p99", "health_p50", "health_p99", "health_max", "drain_s", "goodput"]  # fmt: skip
    print("| variant | " + " | ".join(keys) + " | other |")
    print("|---" * (len(keys) + 2) + "|")
    med: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        med[name] = {k: statistics.median(float(r[k]) for r in rs) for k in keys}
        others = [r["other"] for r in rs]
        print(f"| {name} | " + " | ".join(f"{med[name][k]:.1f}" for k in keys) + f" | {others} |")
    limited, unlimited = med[f"max_queue_size={args.max_queue_size}"], med["no limit"]
    print(f"accepted p99 latency, no limit / limit: {unlimited['ok_p99'] / limited['ok_p99']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"capacity": caps, "results": results}, indent=1, default=float))


if __name__ == "__main__":
    main()
