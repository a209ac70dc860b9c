"""What the serving benchmarks share: a free local port and the deep, narrow ONNX MLP they serve.

Example::

    port = free_port()
    deep_mlp_onnx(Path("/tmp/deep.onnx"), layers=300, width=32, input_name="input")
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

N_FEATURES = 4


async def closed_loop(
    call: Callable[[], Awaitable[bool]], concurrency: int, seconds: float, warmup: float = 0.5
) -> tuple[float, float, float, int]:
    """``concurrency`` workers each await ``call()`` (True = answered right) and call again, for ``seconds``.

    After ``warmup`` seconds (at most a quarter of ``seconds``) not counted. Returns (req/s, p50 ms,
    p99 ms, errors): the one load generator every serving benchmark uses, whatever the transport.
    """
    latencies: list[float] = []
    errors = 0

    async def worker(stop: float, record: bool) -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < stop:
            ok = await call()
            if record:
                latencies.append(time.perf_counter() - t0)
                errors += not ok

    warm = time.perf_counter() + min(warmup, seconds / 4)
    await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return len(latencies) / elapsed, p(0.5), p(0.99), errors


Run = tuple[float, float, float, int]  # (req/s, p50 ms, p99 ms, errors) of one closed-loop run


def median_run(runs: list[Run]) -> Run:
    """Repeats of one configuration as one row: the median of each figure, the errors summed."""
    return (
        statistics.median(x[0] for x in runs),
        statistics.median(x[1] for x in runs),
        statistics.median(x[2] for x in runs),
        sum(x[3] for x in runs),
    )


def free_port(span: int = 1) -> int:
    """A free TCP port on 127.0.0.1 with ``span`` more numbers after it below 65000 (for peers using port + 1, + 2)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span < 65000 and all(_free(port + i) for i in range(1, span + 1)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def deep_mlp_onnx(
    path: Path, layers: int, width: int, input_name: str = "x", outputs: int = 2, graph_name: str = "deep"
) -> Path:
    """A 4 -> width x layers -> ``outputs`` ReLU MLP (output 'y', dynamic batch) written to ``path``.

    Its per-call cost (hundreds of kernel launches) dwarfs its per-row cost, as in most real models at small batch.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, d_in = [], [], input_name, N_FEATURES
    for i in range(layers):
        w = (rng.standard_normal((d_in, width)) / np.sqrt(d_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
        ]
        prev, d_in = f"r{i}", width
    inits.append(numpy_helper.from_array(rng.standard_normal((d_in, outputs)).astype(np.float32), "wo"))
    nodes.append(helper.make_node("MatMul", [prev, "wo"], ["y"]))
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
