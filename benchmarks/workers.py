"""Worker processes (``aimass serve --workers N``): throughput with 2 workers against 1, and dynamic
batching's lift with workers.

Servers (each its own ``aimass serve`` process tree on 127.0.0.1, started once, measured
interleaved and repeated; medians reported):

* ``deep`` - a model whose compute dominates: the deep, narrow ONNX MLP of serve_throughput.py
  (4 -> 32 x ``--deep-layers`` -> 2, default 300: hundreds of kernel launches per call; the one-call
  time is printed), batching off, so every request is one model call. 1 worker against 2, at c=16.
* ``deep`` with dynamic batching (``--max-batch-size 64``, no added delay) against without, both
  with 2 workers, at c=64: what batching adds on top of the processes; and batched with 1 worker.
* ``logreg`` - the 4-feature logistic regression, where HTTP and JSON dominate: 1 worker against 2
  at c=64 (the event loop's share of the work).

The load generator (aiohttp on uvloop, one process, from serve_throughput.py) shares the two cores
with the servers, so on this machine workers compete with the client for the second core: the
ratios are a floor for what a dedicated machine would show. Each model call is pinned to one
onnxruntime thread (``--option session_options.intra_op_num_threads=1``), so a worker's compute is
one core at a time per call and the processes, not onnxruntime's pool, are what is compared.
``--instances`` (default 2, aimass's default) sets concurrent model calls per worker for every server.

Run:  .venv/bin/python benchmarks/workers.py [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from serve_throughput import (
    Server,
    aimass_server,
    build_deep_mlp,
    build_logreg_onnx,
    load_average,
    model_call_us,
    report,
    request_body,
    rows_per_call,
    table,
)

ONE_THREAD = ("--option", "session_options.intra_op_num_threads=1")


def start(name: str, repo: Path, model: str, workers: int, batching: bool, instances: int) -> Server:
    batch = ("--max-batch-size", "64") if batching else ("--max-batch-size", "0")
    extra = ("--workers", str(workers), "--instances", str(instances), *batch, *ONE_THREAD)
    return aimass_server(name, repo, model, *extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deep-layers", type=int, default=300)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; {load_average()}")
    print(f"--instances {args.instances} for every server")
    work = Path(tempfile.mkdtemp(prefix="aimass-workers-bench-"))
    deep_repo = build_deep_mlp(work, args.deep_layers)
    print(f"{args.deep_layers}-layer MLP, one call in-process: {model_call_us(deep_repo / 'deep' / '1')}")
    logreg_repo, _ = build_logreg_onnx(work)
    body = request_body(np.random.default_rng(0))
    n = args.instances
    servers = {
        "deep 1 worker": start("deep 1 worker", deep_repo, "deep", 1, batching=False, instances=n),
        "deep 2 workers": start("deep 2 workers", deep_repo, "deep", 2, batching=False, instances=n),
        "deep 2 w batched": start("deep 2 w batched", deep_repo, "deep", 2, batching=True, instances=n),
        "deep 1 w batched": start("deep 1 w batched", deep_repo, "deep", 1, batching=True, instances=n),
        "logreg 1 worker": start("logreg 1 worker", logreg_repo, "logreg", 1, batching=True, instances=n),
        "logreg 2 workers": start("logreg 2 workers", logreg_repo, "logreg", 2, batching=True, instances=n),
    }
    try:
        for server in servers.values():
            server.wait()
        s = servers
        deep = table([s["deep 2 workers"], s["deep 1 worker"]], [16], args.repeats, args.seconds, body)
        report("compute dominates (deep MLP, batching off)", deep, ["deep 2 workers", "deep 1 worker"], [16])
        names = ["deep 2 w batched", "deep 2 workers", "deep 1 w batched"]
        lift = table([s[n] for n in names], [64], args.repeats, args.seconds, body)
        report("dynamic batching with 2 workers (deep MLP)", lift, names, [64])
        print(f"rows per model call: 2 workers {rows_per_call(s[names[0]])}, 1 worker {rows_per_call(s[names[2]])}")
        http = table([s["logreg 2 workers"], s["logreg 1 worker"]], [64], args.repeats, args.seconds, body)
        report(
            "HTTP/JSON dominates (logistic regression, batching on)",
            http,
            ["logreg 2 workers", "logreg 1 worker"],
            [64],
        )
        print(
            "\nratios: deep 2/1 workers "
            f"{deep[('deep 2 workers', 16)][0] / deep[('deep 1 worker', 16)][0]:.2f}x at c=16; "
            "batching lift with 2 workers "
            f"{lift[('deep 2 w batched', 64)][0] / lift[('deep 2 workers', 64)][0]:.2f}x at c=64; "
            f"logreg 2/1 workers {http[('logreg 2 workers', 64)][0] / http[('logreg 1 worker', 64)][0]:.2f}x at c=64"
        )
        print(load_average())
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
