"""Ray Serve throughput by ingress mode, 1 and 2 replicas, with plain ``aimass serve`` as the baseline, in one run.

One local Ray cluster (``ray.init(num_cpus=2)``, or ``RAY_ADDRESS``); for each ingress mode
(:mod:`aimass.scale.ingress`) Serve is started with that mode's environment, the same 4 -> 8 -> 3
ONNX MLP (onnxruntime on 1 thread per replica) is deployed with :func:`aimass.scale.deploy` at 1 and
2 replicas (0.25 CPU each, our batcher), measured, and Serve is shut down before the next mode:

- ``proxy``: Ray Serve's defaults (its Python HTTP proxy), what aimass used before.
- ``haproxy``: HAProxy ingress + throughput-optimized data plane (aimass's default now).
- ``direct``: throughput-optimized, direct ingress, Ray's proxy on the head node.
- ``... straight to replicas``: in the haproxy and direct modes the replicas listen themselves
  (``Service.replica_urls()``); the load generator sends to them round robin, skipping the ingress.
- ``aimass serve``: the plain single-process server (uvicorn, no Ray), as a subprocess, measured in
  every phase under the same conditions (the table gives the median over the phases).

``--serve-batch`` adds the earlier reference in the proxy mode: a Ray Serve deployment with the
same V2 codec and ``@serve.batch``.

One closed-loop load generator (aiohttp, from benchmarks/serve_throughput.py) sends the same 1-row
V2 JSON request; within a phase runs are interleaved (order rotated each repeat); medians, with the
ratio to plain ``aimass serve``. The load generator shares the machine's cores with everything else.

Run:  .venv/bin/python benchmarks/ray_replicas.py [--seconds 4] [--repeats 3] [--concurrency 16]
      .venv/bin/python benchmarks/ray_replicas.py --modes proxy haproxy --model wide --rows 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import closed_loop, deep_mlp_onnx, median_run
from serve_throughput import run_load  # the load generator every serving benchmark uses

ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}
Run = tuple[float, float, float, int]


def wide_mlp(path: Path, width: int = 1024, layers: int = 6) -> Path:
    """4 -> width x layers -> 3 with ReLU (input 'x', output 'y'): per-row compute dominates."""
    return deep_mlp_onnx(path, layers, width, outputs=3, graph_name="wide")


async def drive_many(urls: list[str], body: bytes, concurrency: int, seconds: float) -> Run:
    """``serve_throughput.drive`` over several URLs, round robin: a client balancing over replicas itself."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    headers = {"content-type": "application/json"}
    turn = itertools.cycle(urls)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> bool:
            async with session.post(next(turn), data=body, headers=headers) as r:
                await r.read()
                return r.status == 200

        return await closed_loop(call, concurrency, seconds)


def load(urls: list[str], body: bytes, concurrency: int, seconds: float) -> Run:
    if len(urls) == 1:
        return run_load(urls[0], body, concurrency, seconds)
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(drive_many(urls, body, concurrency, seconds))
    return asyncio.run(drive_many(urls, body, concurrency, seconds))


def serve_batch_deployment(serve: Any, model_source: Any, replicas: int) -> Any:
    """The reference: the V2 codec plus ``@serve.batch`` in a plain Ray Serve deployment."""

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
    class ServeBatched:
        def __init__(self, source: Any) -> None:
            from aimass.scale.bundle import load_source

            self.model = load_source(source, ONE_THREAD)

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0005)
        async def run(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
            merged = {k: np.concatenate([i[k] for i in items]) for k in items[0]}
            out = self.model.backend.run(merged)
            results, start = [], 0
            for item in items:
                stop = start + len(next(iter(item.values())))
                results.append({k: v[start:stop] for k, v in out.items()})
                start = stop
            return results

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import Response

            from aimass.protocol import v2
            from aimass.server import error_response

            try:
                header = request.headers.get(v2.HEADER_LENGTH)
                decoded = v2.decode_request(await request.body(), None if header is None else int(header))
                out = await self.run(self.model.schema.coerce(decoded.inputs))
                payload, _ = v2.encode_response(out, model_name="mlp", model_version="1", request_id=decoded.id)
                return Response(payload, media_type="application/json")
            except Exception as e:
                status, body = error_response(e)
                return Response(body, status_code=status, media_type="application/json")

    return ServeBatched.bind(model_source)  # type: ignore[attr-defined]  # serve.deployment's wrapper


def phase(mode: str, model: Any, args: argparse.Namespace, plain: str, body: bytes) -> dict[str, list[Run]]:
    """Start Serve in ``mode``, deploy x1 and x2, measure every way in, shut Serve down."""
    import ray
    import serving
    from ray import serve

    from aimass.scale import bundle, deploy

    port = serving.free_port()
    common: dict[str, Any] = {"num_cpus": 0.25, "port": port, "model_options": ONE_THREAD, "ingress": mode}
    targets: dict[str, list[str]] = {}
    try:
        for n in (1, 2):
            svc = deploy({"mlp": model}, name=f"ours{n}", route_prefix=f"/ours{n}", num_replicas=n, **common)
            if svc.ingress != mode:
                print(f"  ! asked for {mode}, Serve runs {svc.ingress}")
            targets[f"{mode}, x{n}"] = [f"{svc.url}/v2/models/mlp/infer"]
            straight = svc.replica_urls()
            if straight:
                targets[f"{mode}, x{n}, straight to replicas"] = [f"{u}/v2/models/mlp/infer" for u in straight]
        if args.serve_batch and mode == "proxy":
            source = bundle(model)
            for n in (1, 2):
                serve.run(serve_batch_deployment(serve, source, n), name=f"sb{n}", route_prefix=f"/sb{n}")
                targets[f"proxy, @serve.batch x{n}"] = [f"http://127.0.0.1:{port}/sb{n}"]
        targets["aimass serve (no Ray)"] = [plain]
        names = list(targets)
        results: dict[str, list[Run]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(load(targets[name], body, args.concurrency, args.seconds))
        return results
    finally:
        serve.shutdown()  # the next mode needs a new controller: Serve reads its mode when it starts
        gone_by = time.monotonic() + 60
        while time.monotonic() < gone_by:  # else the next start finds the dying controller and joins it
            try:
                ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
            except ValueError:
                break
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=["proxy", "haproxy", "direct"])
    parser.add_argument("--model", choices=["mlp", "wide"], default="mlp")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--serve-batch", action="store_true", help="add @serve.batch x1/x2 in the proxy mode")
    args = parser.parse_args()

    import models
    import serving

    from aimass import Model
    from aimass.scale import connect

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="aimass-ray-bench-"))
    onnx_path = models.onnx_mlp(tmp / "mlp.onnx") if args.model == "mlp" else wide_mlp(tmp / "mlp.onnx")
    model = Model.load(onnx_path, options=ONE_THREAD)
    connect(num_cpus=2, log_to_driver=False)
    plain_port = serving.free_port()
    aimass = str(Path(sys.executable).parent / "aimass")
    option = ["--option", "session_options.intra_op_num_threads=1"]
    plain = subprocess.Popen(
        [aimass, "serve", str(onnx_path), "--port", str(plain_port), *option], stdout=subprocess.DEVNULL
    )
    try:
        serving.wait_ready(f"http://127.0.0.1:{plain_port}/v2/health/ready", process=plain)
        data = np.random.default_rng(0).standard_normal((args.rows, 4)).round(4).ravel().tolist()
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [args.rows, 4], "data": data}]}
        ).encode()
        results: dict[str, list[Run]] = {}
        for mode in args.modes:
            print(f"measuring {mode} ...", flush=True)
            for name, runs in phase(
                mode, model, args, f"http://127.0.0.1:{plain_port}/v2/models/mlp/infer", body
            ).items():
                results.setdefault(name, []).extend(runs)
                rps, p50, p99, errors = median_run(runs)
                print(f"  {name:<38}{rps:>9.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  errors {errors}", flush=True)
        base = median_run(results["aimass serve (no Ray)"])[0]
        print(f"\nmodel {args.model}, {args.rows} row(s) per request, concurrency {args.concurrency}")
        print(f"medians of {args.repeats} runs of {args.seconds:g} s (aimass serve: of every phase's runs)")
        print(f"{'server':<38}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs aimass serve':>17}")
        for name, runs in results.items():
            rps, p50, p99, errors = median_run(runs)
            print(f"{name:<38}{rps:>9.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}{rps / base:>16.2f}x")
        machine = platform.processor() or platform.machine()
        print(f"\nmachine: {machine}, {os.cpu_count()} cores; python {platform.python_version()}")
    finally:
        plain.terminate()
        plain.wait(10)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
