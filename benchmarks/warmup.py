"""First-request latency with and without warm-up on load, per backend (onnx, torch, keras).

For each backend a tiny MLP (4 -> 8 -> 3) is built and saved as an aimass package. Each
measurement is a fresh process (framework lazy initialisation is per process): it builds the V2
app over the package with ``warmup=True`` or ``False``, then times the first request and the
second one through the app in process (decode, validation, model call, encode). Runs alternate
(on, off, on, off ...) ``--repeats`` times per backend; the medians are printed with the ratio of
first-request latency off/on, and the load time each side paid.

Run:  .venv/bin/python benchmarks/warmup.py [--repeats 3] [--backends onnx torch keras]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402


def build(backend: str, work: Path) -> Path:
    import numpy as np

    from aimass import Model

    x = np.zeros((2, models.N_FEATURES), np.float32)
    if backend == "onnx":
        model = Model.load(models.onnx_mlp(work / "mlp.onnx"))
    elif backend == "torch":
        model = Model.load(models.torch_mlp(), example_input={"x": x})
    elif backend == "keras":
        model = Model.load(models.keras_mlp())
    else:
        raise SystemExit(f"unknown backend {backend!r}: onnx, torch or keras")
    path = work / backend
    model.save(path)
    return path


def child(package: str, warmup: bool) -> None:
    """One measurement in this (fresh) process: prints JSON with load, first and second request times."""
    import httpx
    import numpy as np

    from aimass.backends.remote import InProcessTransport
    from aimass.protocol import v2
    from aimass.server import create_app

    start = time.perf_counter()
    app = create_app({"m": package}, warmup=warmup, max_batch_size=0)
    load = time.perf_counter() - start
    body, headers = v2.encode_request({"x": np.ones((1, models.N_FEATURES), np.float32)})
    times: list[float] = []
    computes: list[float] = []
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as client:
        client.get("/v2/health/live")  # the transport's own first use, outside the measurement
        for _ in range(2):
            t0 = time.perf_counter()
            r = client.post("/v2/models/m/infer", content=body, headers=headers)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            if not computes:
                computes.append(compute_seconds(app))
    result = {"load_s": load, "first_ms": times[0] * 1e3, "second_ms": times[1] * 1e3}
    print(json.dumps({**result, "first_call_ms": computes[0] * 1e3}))


def compute_seconds(app: object) -> float:
    """The model-call time the server recorded so far (``aimass_compute_seconds_sum``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = app.metrics.render()[0].decode()  # type: ignore[attr-defined]
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == "aimass_compute_seconds_sum")


def measure(package: Path, warmup: bool) -> dict[str, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(package), "--warmup", "1" if warmup else "0"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch", "keras"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, bool(args.warmup))
        return
    work = Path(tempfile.mkdtemp(prefix="aimass-warmup-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("first request ms (end to end, in process) and its model call ms, warm-up on vs off; medians")
    head = f"{'backend':<8} {'first on':>9} {'off':>8} {'off/on':>7} {'call on':>8} {'call off':>9} {'2nd':>6}"
    print(f"{head} load s on/off")
    for backend in args.backends:
        package = build(backend, work)
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(args.repeats):
            for flag in (True, False):
                runs[flag].append(measure(package, flag))

        def med(flag: bool, key: str, runs: dict[bool, list[dict[str, float]]] = runs) -> float:
            return statistics.median(r[key] for r in runs[flag])

        on, off = med(True, "first_ms"), med(False, "first_ms")
        second = statistics.median(r["second_ms"] for r in runs[True] + runs[False])
        print(
            f"{backend:<8} {on:>9.2f} {off:>8.2f} {off / on:>7.1f} {med(True, 'first_call_ms'):>8.2f} "
            f"{med(False, 'first_call_ms'):>9.2f} {second:>6.2f} "
            f"{med(True, 'load_s'):.2f} / {med(False, 'load_s'):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
