"""Costs the model library adds: monitoring on ``predict``, and loading through a store reference.

1. ``predict`` on a monitored Model (``model.monitor`` started: timing + sliding window of inputs)
   vs the same Model unmonitored, on an XGBoost classifier, 1 row and 64 rows per call.
2. ``Model.load("fraud:1")`` (resolve in the library + checksum verification) vs ``Model.load(path)``
   of the same package directory (checksum verification only).

Both sides run interleaved round by round so machine noise hits them alike; medians over rounds
and their ratio are reported.

Run:  .venv/bin/python benchmarks/library.py [--rounds 20] [--calls 500]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import models
from overhead import interleaved_us  # the same ABBA timing as every overhead figure

from aimass import Model
from aimass.store import Store


def compare(label: str, base: Callable[[], object], ours: Callable[[], object], rounds: int, calls: int) -> None:
    a, b = interleaved_us(base, ours, rounds, calls, warmup=max(calls // 10, 3))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{label:<44} {ma:10.1f} us {mb:10.1f} us   x{mb / ma:5.2f}  (+{mb - ma:.1f} us)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{'':<44} {'baseline':>13} {'library':>13}   ratio")

    x, _ = models.dataset(256)
    booster = models.xgb_classifier(10)
    plain = Model.load(booster)
    watched = Model.load(booster)
    for m in (plain, watched):  # one thread each: on 2 shared cores xgboost's thread pool is mostly noise
        m.backend.booster.set_param({"nthread": 1})  # type: ignore[attr-defined]
    watched.monitor.set_reference(x)
    for rows in (1, 64):
        batch = x[:rows]
        compare(
            f"predict, {rows} row(s): plain vs monitored",
            lambda b=batch: plain.predict(b),
            lambda b=batch: watched.predict(b),
            args.rounds,
            args.calls,
        )

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AIMASS_STORE"] = str(Path(tmp) / "lib")
        lib = Store()
        lib.publish(plain, "fraud")
        path = lib.path("fraud", 1)
        compare(
            "Model.load: package path vs 'fraud:1'",
            lambda: Model.load(path),
            lambda: Model.load("fraud:1"),
            max(args.rounds // 2, 3),
            max(args.calls // 50, 5),
        )
        report = watched.monitor.report()
        print(f"monitor report over a {report.window_rows}-row window: {len(report.features)} features scored")
        start = time.perf_counter()
        for _ in range(20):
            watched.monitor.report()
        print(f"report() time: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
