"""Per-call cost of ``Model.predict`` over the raw framework call, and the cost of ``import aimass``.

Both sides call the very same session/module, interleaved round by round, so machine noise hits
them alike; the figure reported is the median per-call time over rounds, and the difference.

Run:  .venv/bin/python benchmarks/overhead.py [--rounds 30] [--calls 2000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import models

from aimass import Model


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved_us(
    ref: Callable[[], object], ours: Callable[[], object], rounds: int, calls: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Per-call microseconds of ``ref`` and ``ours``, one figure per round, after ``warmup`` calls of each.

    Example: ``ref_t, ours_t = interleaved_us(raw, lambda: m.predict(x), rounds=30, calls=2000, warmup=200)``
    """
    for _ in range(warmup):
        ref()
        ours()
    ref_t: list[float] = []
    ours_t: list[float] = []
    for i in range(rounds):  # ABBA order: neither side always runs first (caches, frequency drift)
        first, second = ((ref, ref_t), (ours, ours_t)) if i % 2 == 0 else ((ours, ours_t), (ref, ref_t))
        first[1].append(per_call_us(first[0], calls))
        second[1].append(per_call_us(second[0], calls))
    return ref_t, ours_t


def compare(label: str, raw: Callable[[], object], ours: Callable[[], object], rounds: int, calls: int) -> None:
    raw_t, ours_t = interleaved_us(raw, ours, rounds, calls, warmup=max(calls // 10, 10))
    r, o = statistics.median(raw_t), statistics.median(ours_t)
    # The paired ratio (each round against its neighbour) is steadier than a ratio of medians
    # when other work shares the CPU.
    paired = statistics.median(b / a for a, b in zip(raw_t, ours_t, strict=True))
    print(
        f"{label:<40} raw {r:8.2f} us  aimass {o:8.2f} us  added {o - r:+6.2f} us  "
        f"ratio {o / r:5.3f}  paired ratio {paired:5.3f}"
    )


def onnx_mlp_large(path: Path) -> Path:
    """256 -> 1024 -> 1024 -> 256 MLP: a model whose call costs well over 100 us."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [256, 1024, 1024, 256]
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}" if i < 2 else out]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def import_times(runs: int = 15) -> None:
    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    base, imp, model = [], [], []
    for _ in range(runs):  # interleaved, like the calls above
        base.append(run("pass"))
        imp.append(run("import aimass"))
        model.append(run("from aimass import Model"))
    b = statistics.median(base)
    print(f"{'python -c pass':<44} {b * 1e3:7.1f} ms (interpreter start, subtracted below)")
    print(f"{'import aimass':<44} {(statistics.median(imp) - b) * 1e3:7.1f} ms")
    print(f"{'from aimass import Model (numpy, pydantic)':<44} {(statistics.median(model) - b) * 1e3:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    tmp = Path(tempfile.mkdtemp())
    one_thread = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}

    tiny = Model.load(models.onnx_mlp(tmp / "tiny.onnx"), options=one_thread)
    sess = tiny.backend.session  # type: ignore[attr-defined]
    x1 = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    compare("onnx tiny MLP 4-8-3, batch 1", lambda: sess.run(["y"], {"x": x1}), lambda: tiny.predict(x1), **vars(args))
    compare(
        "onnx tiny MLP, dict input",
        lambda: sess.run(["y"], {"x": x1}),
        lambda: tiny.predict({"x": x1}),
        **vars(args),
    )

    large = Model.load(onnx_mlp_large(tmp / "large.onnx"), options=one_thread)
    lsess = large.backend.session  # type: ignore[attr-defined]
    x32 = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    compare(
        "onnx MLP 256-1024-1024-256, batch 32",
        lambda: lsess.run(["y"], {"x": x32}),
        lambda: large.predict(x32),
        rounds=args.rounds * 4,
        calls=max(args.calls // 20, 20),
    )

    import torch

    torch.set_num_threads(1)
    net = models.torch_mlp()
    tm = Model.load(net, example_input=x1)

    def raw_torch() -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x1)).numpy()  # type: ignore[no-any-return]

    compare("torch MLP 4-8-3, batch 1", raw_torch, lambda: tm.predict(x1), **vars(args))
    import_times()


if __name__ == "__main__":
    main()
