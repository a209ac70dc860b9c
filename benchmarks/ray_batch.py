"""Ray Data batch prediction (:func:`aimass.scale.batch_predict`) against local ``Model.predict_batch``.

The same rows (float32, 4 features) through the 4 -> 8 -> 3 ONNX MLP, or with ``--model wide`` the
compute-bound 4 -> 1024 x 6 -> 3 MLP of benchmarks/ray_replicas.py (onnxruntime on one thread):
locally with ``predict_batch``, and on a local Ray cluster (``num_cpus=2``, started once, not timed)
with 1 and 2 actors, results materialized in the object store. Interleaved, repeated, medians;
``rows/s`` and the ratio to local. Ray's per-job start (actor pool, scheduling) is included.

Run:  .venv/bin/python benchmarks/ray_batch.py [--rows 1000000] [--repeats 3] [--batch-size 8192]
      .venv/bin/python benchmarks/ray_batch.py --model wide --rows 20000 --batch-size 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_replicas import wide_mlp  # the compute-bound model of the serving benchmark

ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--model", choices=["mlp", "wide"], default="mlp")
    args = parser.parse_args()

    import models

    from aimass import Model
    from aimass.scale import batch_predict, connect

    tmp = Path(tempfile.mkdtemp())
    path = models.onnx_mlp(tmp / "mlp.onnx") if args.model == "mlp" else wide_mlp(tmp / "wide.onnx")
    model = Model.load(path, options=ONE_THREAD)
    rows = np.random.default_rng(0).standard_normal((args.rows, 4)).astype(np.float32)
    connect(num_cpus=2, log_to_driver=False)
    want = model.predict(rows[:1000])["y"]

    def ray_run(actors: int) -> Callable[[], None]:
        def run() -> None:
            ds = batch_predict(
                model, rows, batch_size=args.batch_size, actors=actors, num_cpus=0.5, progress=False,
                keep_columns=False, model_options=ONE_THREAD,
            )  # fmt: skip
            got = np.stack(ds.limit(1000).to_pandas()["y"].to_numpy())
            assert np.allclose(got, want, atol=1e-5)

        return run

    def local() -> None:
        model.predict_batch(rows, batch_size=args.batch_size, progress=False)

    sides: dict[str, Callable[[], None]] = {
        "local predict_batch": local,
        "batch_predict, 1 actor": ray_run(1),
        "batch_predict, 2 actors": ray_run(2),
    }
    ray_run(1)()  # warm-up: first job imports Ray Data on the workers
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["local predict_batch"])
    print(f"{args.rows} rows, batch_size {args.batch_size}, median of {args.repeats}")
    print(f"{'side':<26}{'seconds':>9}{'rows/s':>12}{'vs local':>10}")
    for name in names:
        t = statistics.median(times[name])
        print(f"{name:<26}{t:>9.2f}{args.rows / t:>12.0f}{base / t:>9.2f}x")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
