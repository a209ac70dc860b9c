"""Ray Serve throughput: 1 vs 2 replicas, and our batcher vs ``@serve.batch``, with ``aimass serve`` as the baseline.

Deployed side by side on one local Ray cluster (``ray.init(num_cpus=2)``, or ``RAY_ADDRESS``),
each with its own route prefix and the same 4 -> 8 -> 3 ONNX MLP (onnxruntime on 1 thread per
replica):

- ``ours x1`` / ``ours x2``: :func:`aimass.scale.deploy` with 1 / 2 replicas; each replica is our
  ASGI app with our dynamic batcher (max_batch_size 64, max_queue_delay 0).
- ``serve.batch x1`` / ``x2``: the reference, a Ray Serve deployment that decodes with the same V2
  codec and merges requests with ``@serve.batch`` (max_batch_size 64, batch_wait_timeout_s 0.0005).
- ``aimass serve``: the plain single-process server (uvicorn, no Ray), as a subprocess.

``--model wide --rows 64`` swaps in a compute-bound model (4 -> 1024 x 6 -> 3, ~12 MFLOP a row) with
64-row requests, where a replica's single onnxruntime thread, not the HTTP path, is the limit.

One closed-loop load generator (aiohttp, from benchmarks/serve_throughput.py) sends the same 1-row
V2 JSON request; runs are interleaved (the order rotates every repeat) and medians are reported,
with ratios to ``ours x1``. The load generator shares the machine's cores with everything else.

Run:  .venv/bin/python benchmarks/ray_replicas.py [--seconds 4] [--repeats 3] [--concurrency 16]
      .venv/bin/python benchmarks/ray_replicas.py --model wide --rows 64 --concurrency 8
"""

from __future__ import annotations

import argparse
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

from harness import deep_mlp_onnx, median_run
from serve_throughput import run_load  # the load generator every serving benchmark uses

ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}


def wide_mlp(path: Path, width: int = 1024, layers: int = 6) -> Path:
    """4 -> width x layers -> 3 with ReLU (input 'x', output 'y'): per-row compute dominates."""
    return deep_mlp_onnx(path, layers, width, outputs=3, graph_name="wide")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("--model", choices=["mlp", "wide"], default="mlp")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    import models
    import serving
    from ray import serve

    from aimass import Model
    from aimass.scale import bundle, connect, deploy

    tmp = Path(tempfile.mkdtemp(prefix="aimass-ray-bench-"))
    onnx_path = models.onnx_mlp(tmp / "mlp.onnx") if args.model == "mlp" else wide_mlp(tmp / "mlp.onnx")
    model = Model.load(onnx_path, options=ONE_THREAD)
    connect(num_cpus=2, log_to_driver=False)
    port = serving.free_port()
    common: dict[str, Any] = {"num_cpus": 0.25, "port": port, "model_options": ONE_THREAD}
    urls: dict[str, str] = {}
    for n in (1, 2):
        svc = deploy({"mlp": model}, name=f"ours{n}", route_prefix=f"/ours{n}", num_replicas=n, **common)
        urls[f"ours x{n}"] = f"{svc.url}/v2/models/mlp/infer"
    source = bundle(model)
    for n in (1, 2):
        app = serve_batch_deployment(serve, source, n)
        serve.run(
            app.options(num_replicas=n) if hasattr(app, "options") else app, name=f"sb{n}", route_prefix=f"/sb{n}"
        )
        urls[f"serve.batch x{n}"] = f"http://127.0.0.1:{port}/sb{n}"
    plain_port = serving.free_port()
    plain = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "aimass"),
            "serve",
            str(onnx_path),
            "--port",
            str(plain_port),
            "--option",
            "session_options.intra_op_num_threads=1",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        serving.wait_ready(f"http://127.0.0.1:{plain_port}/v2/health/ready", process=plain)
        urls["aimass serve (no Ray)"] = f"http://127.0.0.1:{plain_port}/v2/models/mlp/infer"
        data = np.random.default_rng(0).standard_normal((args.rows, 4)).round(4).ravel().tolist()
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [args.rows, 4], "data": data}]}
        ).encode()
        print(f"model {args.model}, {args.rows} row(s) per request")
        names = list(urls)
        for c in args.concurrency:
            results: dict[str, list[tuple[float, float, float, int]]] = {n: [] for n in names}
            for r in range(args.repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    results[name].append(run_load(urls[name], body, c, args.seconds))
            base = median_run(results["ours x1"])[0]
            print(f"\nconcurrency {c}: median of {args.repeats} runs of {args.seconds:g} s")
            print(f"{'server':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs ours x1':>12}")
            for name in names:
                rps, p50, p99, errors = median_run(results[name])
                print(f"{name:<24}{rps:>9.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}{rps / base:>11.2f}x")
        machine = platform.processor() or platform.machine()
        print(f"\nmachine: {machine}, {os.cpu_count()} cores; python {platform.python_version()}")
    finally:
        plain.terminate()
        plain.wait(10)
        serve.shutdown()
        import ray

        ray.shutdown()


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
