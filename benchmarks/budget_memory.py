"""Memory of a server with many models: all loaded at start vs on demand under a budget of 3.

Thirty ONNX models (each a 256 x 1024 float weight, 1 MiB, and a distinct answer) in a model
repository. Each variant runs in a fresh process: ``eager`` loads all 30 at start; ``budget``
starts with ``max_loaded_models=3`` and serves ``--requests`` random requests from 16 concurrent
clients (in process, every answer checked). Printed: resident memory growth over the process's
state before the app (MiB), models loaded, loads and evictions, and the request rate.

Run:  .venv/bin/python benchmarks/budget_memory.py [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_MODELS, WIDTH, COLUMNS = 30, 256, 1024
ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}


def build(root: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from aimass import Model

    for i in range(N_MODELS):
        w = np.full((WIDTH, COLUMNS), (i + 1) / COLUMNS, dtype=np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("ReduceSum", ["h", "axes"], ["y"])],
            "weighted",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
            initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = root / f"m{i}.onnx"
        onnx.save(model, str(path))
        Model.load(path).save(root / "repo" / f"m{i}" / "1")
        path.unlink()


def child(repo: str, variant: str, requests: int) -> None:
    import httpx
    import onnxruntime  # noqa: F401  (imported before the baseline: both variants pay it alike)

    from aimass.protocol import v2
    from aimass.server import create_app
    from aimass.server.budget import release_memory, resident_bytes

    release_memory()
    before = resident_bytes()
    budget = 3 if variant == "budget" else 0
    app = create_app(repository=repo, max_loaded_models=budget, model_options=ONE_THREAD, max_batch_size=0)
    rate = 0.0
    if variant == "budget":
        rng = random.Random(0)
        plan = [rng.randrange(N_MODELS) for _ in range(requests)]

        async def traffic() -> float:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:

                async def one(k: int) -> None:
                    for i in plan[k::16]:
                        x = np.ones((1, WIDTH), np.float32)
                        body, headers = v2.encode_request({"x": x}, binary=True)
                        r = await client.post(f"/v2/models/m{i}/infer", content=body, headers=headers)
                        got = v2.decode_response(r.content, r.headers.get("inference-header-content-length"))
                        assert float(got.outputs["y"][0, 0]) == WIDTH * (i + 1), (i, got.outputs)

                start = time.perf_counter()
                await asyncio.gather(*(one(k) for k in range(16)))
                return requests / (time.perf_counter() - start)

        rate = asyncio.run(traffic())
    release_memory(collect=False)
    text = app.metrics.render()[0].decode()
    loads = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("aimass_model_loads_total"))
    evictions = sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("aimass_model_evictions_total")
    )
    print(
        json.dumps(
            {
                "grown_mib": (resident_bytes() - before) / 2**20,
                "loaded": len(app.repository.loaded()),
                "peak": app.repository.peak_loaded if budget else len(app.repository.loaded()),
                "loads": loads,
                "evictions": evictions,
                "rate": rate,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.requests)
        return
    work = Path(tempfile.mkdtemp(prefix="aimass-budget-"))
    build(work)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {N_MODELS} models of 1 MiB")
    results = {}
    for variant in ("eager", "budget"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(work / "repo"), variant, "--requests", str(args.requests)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[variant] = r = json.loads(out.strip().splitlines()[-1])
        rate = f", {r['rate']:.0f} req/s over {args.requests} random requests" if r["rate"] else ""
        print(
            f"{variant:>6}: resident +{r['grown_mib']:.1f} MiB, {r['loaded']} loaded (peak {r['peak']}), "
            f"{r['loads']:.0f} loads, {r['evictions']:.0f} evictions{rate}"
        )
    print(f"memory eager/budget: {results['eager']['grown_mib'] / max(results['budget']['grown_mib'], 0.1):.1f}x")


if __name__ == "__main__":
    main()
