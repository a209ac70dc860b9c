"""Request bombs: bodies built to make the server spend far more memory or event-loop time than
they cost to send (issue 13, finding 4). Bounds are on behaviour, not speed: peak memory against
the body size, and health checks answered while a maximal body decodes.

Codec cases run in-process under ``tracemalloc`` (numpy reports its buffers to it); the maximal
body cases run a real server in a subprocess and read its peak RSS (``VmHWM``) from /proc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
import serving

from aimass.errors import SchemaError
from aimass.protocol import v2

MiB = 1 << 20


def _body(data: bytes, datatype: str = "FP32", shape: str = "", name: str = "x") -> bytes:
    count = data.count(b",") + 1 if data else 0
    return b'{"inputs":[{"name":"%s","datatype":"%s","shape":[%s],"data":[%s]}]}' % (
        name.encode(),
        datatype.encode(),
        (shape or str(count)).encode(),
        data,
    )


def _repeat(element: bytes, size: int) -> bytes:
    n = size // (len(element) + 1)
    return b",".join([element] * n)


def _peak(fn: object) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()  # type: ignore[operator]
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("element", "datatype"), [(b"0", "FP32"), (b"null", "FP32"), (b"0.5", "FP64"), (b"-7", "INT64"), (b"true", "BOOL")]
)
def test_large_json_data_decodes_in_bounded_memory(element: bytes, datatype: str) -> None:
    body = _body(_repeat(element, 8 * MiB), datatype)
    request, peak = _peak(lambda: v2.decode_request(body))
    x = request.inputs["x"]  # type: ignore[attr-defined]
    # The tensor itself plus one slice's Python objects; the plain path took ~11x the body.
    assert peak < x.nbytes + 8 * MiB, (peak / MiB, x.nbytes / MiB)
    small = v2.decode_request(_body(b",".join([element] * 3), datatype)).inputs["x"]  # the plain path
    np.testing.assert_array_equal(x[:3], small)
    assert x.dtype == small.dtype and x.size == body.count(b",") - 2  # commas between elements + 1 - 3 others


def test_lean_path_matches_the_plain_path() -> None:
    rng = np.random.default_rng(0)
    for arr in (
        rng.standard_normal(50_000).astype(np.float32),
        rng.integers(-(2**31), 2**31 - 1, 40_000).astype(np.int32),
        rng.integers(0, 2, 60_000).astype(bool),
        rng.standard_normal((20_000, 4)),
    ):
        body, _ = v2.encode_request({"x": arr})
        assert len(body) > v2.LEAN_BODY_SIZE
        np.testing.assert_array_equal(v2.decode_request(body).inputs["x"], arr)
    nested = np.arange(40_000, dtype=np.int64).reshape(10_000, 4)
    body = _body(str(nested.tolist()).replace(" ", "").encode()[1:-1], "INT64", "10000,4")
    np.testing.assert_array_equal(v2.decode_request(body).inputs["x"], nested)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body(_repeat(b"1.5", MiB), "INT32"), "non-integer"),
        (_body(_repeat(b"1", MiB) + b",1e999999", "FP32"), "data"),
        (_body(_repeat(b"300", MiB), "INT8"), "do not fit"),
        (_body(_repeat(b"0", MiB), "FP32", "9"), "more"),
        (_body(b"0,," + _repeat(b"0", MiB), "FP32", "1000"), "malformed JSON"),
        (_body(_repeat(b"0", MiB), "BYTES"), "strings"),
        (_body(_repeat(b"0", MiB), "FP32", str(1 << 26)), "at most"),
    ],
)
def test_bad_large_data_is_a_400(body: bytes, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as e:
        v2.decode_request(body)
    assert e.value.status_code == 400


def test_huge_declared_shape_is_refused_before_allocating() -> None:
    body = _body(_repeat(b"0", 256 * 1024), "FP64", str(v2.DEFAULT_MAX_ELEMENTS))
    with pytest.raises(SchemaError, match="holds at most"):
        _peak(lambda: v2.decode_request(body))
    tracemalloc.start()
    with pytest.raises(SchemaError):
        v2.decode_request(body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB


def test_deep_nesting_is_a_clear_400() -> None:
    for deep in (b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"0" + b"]" * 40 + b"," + _repeat(b"0", 64 * 1024)):
        with pytest.raises(SchemaError, match="malformed JSON request: .*nested more than"):
            v2.decode_request(b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":' + deep + b"}]}")
    objects = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(SchemaError, match="nested more than 1024 levels"):
        v2.decode_request(b'{"inputs":[], "parameters":' + objects + b"}")


def test_many_inputs_and_large_bytes_json_are_413() -> None:
    one = b'{"name":"x%d","datatype":"FP32","shape":[1],"data":[0]}'
    many = b'{"inputs":[' + b",".join(one % i for i in range(40_000)) + b"]}"
    with pytest.raises(v2.BodyTooLarge, match="binary tensor data") as e:
        v2.decode_request(many, max_json_tree=1 * MiB)
    assert e.value.status_code == 413
    strings = _body(_repeat(b'"ab"', 2 * MiB), "BYTES")
    with pytest.raises(v2.BodyTooLarge):
        v2.decode_request(strings, max_json_tree=1 * MiB)
    assert v2.decode_request(strings).inputs["x"][0] == b"ab"  # under the default limit it decodes


def test_large_array_outside_data_is_a_400() -> None:
    body = b'{"parameters":{"p":[' + _repeat(b"0", 256 * 1024) + b']},"inputs":[]}'
    with pytest.raises(SchemaError, match="not an input's 'data'"):
        v2.decode_request(body)


def test_strings_that_look_like_arrays_are_not_cut() -> None:
    fake = b"[" + _repeat(b"0", 128 * 1024) + b"]"
    body = b'{"id":"%s","inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["%s"]}]}' % (fake, fake)
    request = v2.decode_request(body)
    assert request.id == fake.decode() and request.inputs["x"][0] == fake


def test_binary_tensors_are_not_copied() -> None:
    body, headers = v2.encode_request({"x": np.zeros(4 * MiB, np.float32)}, binary=True)
    request, peak = _peak(lambda: v2.decode_request(body, int(headers[v2.HEADER_LENGTH])))
    assert request.inputs["x"].base is not None and peak < MiB  # type: ignore[attr-defined]


# -- a real server, maximal bodies ----------------------------------------------------------------

_SERVER = """
import sys, uvicorn
from aimass.server import create_app
uvicorn.run(create_app({"mlp": sys.argv[1]}, max_batch_size=0), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", lifespan="off")
"""


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize(("element", "datatype"), [(b"0", "INT32"), (b"null", "FP64")])
def test_maximal_json_body_keeps_health_answering_and_memory_bounded(
    tmp_path: Path, element: bytes, datatype: str
) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    port = serving.free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(path), str(port)], env=os.environ.copy())
    try:
        base = f"http://127.0.0.1:{port}"
        serving.wait_ready(f"{base}/v2/health/ready", process=proc)
        # The largest body the default limit accepts; it decodes fully, then the model refuses the
        # input's name (400): what is measured is the decode.
        data = _repeat(element, 64 * MiB - 200)
        n = (data.count(b",") + 1) // 4 * 4
        data = data[: n * (len(element) + 1) - 1]
        body = _body(data, datatype, f"{n // 4},4", name="z")
        del data
        assert len(body) <= 64 * MiB
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(20):  # warm up
                assert c.get("/v2/health/live").status_code == 200
        before = _status(proc.pid, "VmRSS")
        pings: list[tuple[float, float]] = []
        done = threading.Event()
        after = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while not (done.is_set() and after.is_set()):
                    t0 = time.monotonic()
                    assert c.get("/v2/health/live").status_code == 200
                    pings.append((t0, time.monotonic()))
                    if done.is_set():
                        after.set()  # one answer sent after the bomb's answer arrived
                    time.sleep(0.002)

        prober = threading.Thread(target=probe)
        prober.start()
        sent = time.monotonic()
        r = httpx.post(
            f"{base}/v2/models/mlp/infer", content=body, headers={"content-type": "application/json"}, timeout=120
        )
        answered = time.monotonic()
        done.set()
        prober.join()
        assert r.status_code == 400, r.text[:300]
        peak = _status(proc.pid, "VmHWM") - before
        tensor = n * np.dtype(datatype.lower().replace("fp", "float").replace("int", "int")).itemsize
        # Health answers between the bomb's send and its answer, and the first one after: the longest
        # silence between them is how long the event loop stopped serving.
        ends = [b for _, b in pings if sent < b < answered] + [min(b for _, b in pings if b >= answered)]
        silence = max(b - a for a, b in zip([sent, *ends], ends, strict=False))
        took = answered - sent
        print(
            f"\n{element!r} {datatype}: body {len(body) / MiB:.0f} MiB, tensor {tensor / MiB:.0f} MiB, "
            f"peak RSS +{peak / MiB:.0f} MiB, request {took:.2f} s, {len(ends) - 1} health answers meanwhile, "
            f"longest health silence {silence * 1000:.0f} ms"
        )
        # Memory: the body while it is read and joined (2x), the decoded tensor, and slack for one
        # slice and the allocator; the plain path took ~9x the body on top of the body.
        assert peak < 2 * len(body) + tensor + 64 * MiB, peak / MiB
        # The event loop kept serving while the body decoded: no health silence near the decode's
        # length (the plain path was silent for ~3/4 of the request: the whole decode).
        assert silence < took / 4, (silence, took)
    finally:
        proc.terminate()
        proc.wait(10)
