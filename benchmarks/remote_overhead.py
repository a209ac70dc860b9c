"""Client-side cost of the remote backend, and binary vs JSON tensors for a 1 MB input.

1. ``Model.load(url).predict(x)`` (local validation + V2 encode + POST + decode) against a bare
   ``httpx.Client.post`` of the very same request bytes to the same server (response read, not
   decoded): the ratio is what the remote backend adds on top of HTTP itself.
2. The same remote ``predict`` of a 1 MiB FP32 input (65536 x 4) with binary tensors
   (``binary_threshold=0``) against JSON tensors (``binary_threshold=None``), end to end.

The server is ``aimass serve`` in its own process on 127.0.0.1; the two sides of each comparison
are interleaved round by round (ABBA) and the medians reported with the ratio.

Run:  .venv/bin/python benchmarks/remote_overhead.py [--rounds 15] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import models
import serving
from overhead import interleaved_us  # the same ABBA timing as every overhead figure

from aimass import Model
from aimass.protocol import v2


def compare(label: str, ref: Callable[[], object], ours: Callable[[], object], rounds: int, calls: int) -> float:
    ref_t, ours_t = interleaved_us(ref, ours, rounds, calls, warmup=max(calls // 10, 3))
    r, o = statistics.median(ref_t), statistics.median(ours_t)
    paired = statistics.median(b / a for a, b in zip(ref_t, ours_t, strict=True))
    print(f"{label:<58} reference {r:>9.1f} us   ours {o:>9.1f} us   ratio {paired:.2f}x")
    return paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="aimass-remote-") as tmp:
        path = models.onnx_mlp(Path(tmp) / "mlp.onnx")
        port = serving.free_port()
        aimass = Path(sys.executable).parent / "aimass"
        proc = subprocess.Popen([str(aimass), "serve", f"mlp={path}", "--port", str(port)], stdout=subprocess.DEVNULL)
        try:
            serving.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process=proc)
            url = f"http://127.0.0.1:{port}/v2/models/mlp"
            local = Model.load(path)

            x = models.dataset(1)[0]
            remote = Model.load(url)
            np.testing.assert_array_equal(remote.predict(x)["y"], local.predict(x)["y"])
            body, headers = remote.backend._encode({"x": x})  # type: ignore[attr-defined]
            bare = httpx.Client()

            def bare_post() -> bytes:
                return bare.post(f"{url}/infer", content=body, headers=headers).content

            ratio = compare(
                "1-row predict: remote backend vs bare httpx POST",
                bare_post,
                lambda: remote.predict(x),
                args.rounds,
                args.calls,
            )
            print(f"  target <= 1.2x: {'met' if ratio <= 1.2 else 'MISSED'}")

            big = np.random.default_rng(0).standard_normal((65536, 4)).astype(np.float32)
            as_json = Model.load(url, options={"binary_threshold": None, "binary_output": False})
            as_binary = Model.load(url, options={"binary_threshold": 0})
            np.testing.assert_array_equal(as_binary.predict(big)["y"], as_json.predict(big)["y"])
            print(f"1 MiB input: {big.nbytes} bytes in, {local.predict(big)['y'].nbytes} bytes out")
            ratio = compare(
                "1 MiB predict: JSON (reference) vs binary (ours)",
                lambda: as_json.predict(big),
                lambda: as_binary.predict(big),
                max(5, args.rounds // 3),
                max(3, args.calls // 100),
            )
            print(f"  binary is {1 / ratio:.1f}x faster; target >= 5x: {'met' if 1 / ratio >= 5 else 'MISSED'}")
            n = 65536 * 4
            body_json, _ = v2.encode_request({"x": big})
            body_bin, _ = v2.encode_request({"x": big}, binary=True)
            print(f"  request bodies: JSON {len(body_json)} bytes, binary {len(body_bin)} bytes ({n} floats)")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
