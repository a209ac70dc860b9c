"""Decode stalls (issue 24, item 5 and the first point of item 11): a maximal gRPC message or binary
BYTES body decodes without stopping the event loop, in memory a small multiple of the message, and
BYTES sent to a number input are refused from the tensor's head, before a single element is split.

A real server (HTTP and gRPC on one event loop, as ``aimass serve --grpc-port`` runs them) in a
subprocess; a thread polls ``/v2/health/live`` while the message decodes, and the server's peak RSS
(``VmHWM``) is read from /proc. The body limit is 16 MiB (the default is 64 MiB) to keep each case
to a few seconds on a shared 2-core machine: "maximal" is the largest message that limit accepts.
Before the change, gRPC parsed and converted on the event loop (16 MiB of ``int_contents``: health
silent 2.6 s, peak RSS 30x the message; 16 MiB of raw 2-byte BYTES: 2.3 s), BYTES were split one
Python step per element (16 MiB over HTTP: 2.1 s) and BYTES sent to FP32 were split before the
datatype check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest
import serving

from aimass.protocol import v2

grpc = pytest.importorskip("grpc")
from aimass.protocol.grpc import grpc_service_pb2 as pb  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

MiB = 1 << 20
LIMIT = 16 * MiB
# What a health check may wait, at most, while a maximal message decodes.
MAX_SILENCE = 0.5
# Peak RSS growth allowed while a maximal message decodes: the message held twice (as received,
# and as the bytes grpc or uvicorn hands over), the decoded tensor, and slack for the allocator and
# one slice of temporaries. docs/security.md ("Request decoding") documents it.
SLACK = 64 * MiB

_SERVER = """
import sys
from aimass.server import create_app
from aimass.server.grpc import serve_http_and_grpc
app = create_app({"mlp": sys.argv[1], "strings": sys.argv[2]}, max_batch_size=0, max_body_size=int(sys.argv[5]))
serve_http_and_grpc(app, port=int(sys.argv[3]), grpc_port=int(sys.argv[4]), uvicorn_options={"log_level": "warning"})
"""


class Server:
    """The subprocess server: its HTTP base URL, gRPC target and process id."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, grpc_port: int) -> None:
        self.proc, self.base, self.target = proc, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"

    def reset_peak(self) -> int:
        """Start a new peak-RSS window (``VmHWM`` back to the current RSS); the current RSS."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.status("VmRSS")

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("stalls")
    mlp, strings = models.onnx_mlp(tmp / "mlp.onnx"), serving.onnx_strings(tmp / "strings.onnx")
    port, grpc_port = serving.free_port(), serving.free_port()
    cmd = [sys.executable, "-c", _SERVER, str(mlp), str(strings), str(port), str(grpc_port), str(LIMIT)]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    try:
        srv = Server(proc, port, grpc_port)
        serving.wait_ready(f"{srv.base}/v2/health/ready", process=proc)
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            for _ in range(20):  # warm up
                assert c.get("/v2/health/live").status_code == 200
        yield srv
    finally:
        proc.terminate()
        proc.wait(10)


def _model_infer(target: str, wire: bytes) -> tuple[Any, Any]:
    """Send ModelInfer bytes as they are; (status code, details) of the answer."""
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 2 * LIMIT)]) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer", response_deserializer=pb.ModelInferResponse.FromString
        )
        try:
            call(wire, timeout=120)
        except grpc.RpcError as e:
            return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _while_polling(server: Server, send: Callable[[], Any]) -> tuple[Any, float, float, int]:
    """``send()`` while a thread polls health: (its result, longest health silence, its time, peak RSS growth)."""
    before = server.reset_peak()
    pings: list[float] = []
    done, after = threading.Event(), threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.base, timeout=60) as c:
            while not after.is_set():
                assert c.get("/v2/health/live").status_code == 200
                pings.append(time.monotonic())
                if done.is_set():
                    after.set()  # one answer after the big one's
                time.sleep(0.002)

    prober = threading.Thread(target=probe)
    prober.start()
    sent = time.monotonic()
    try:
        result = send()
    finally:
        answered = time.monotonic()
        done.set()
        prober.join()
    ends = [t for t in pings if sent < t < answered] + [min(t for t in pings if t >= answered)]
    silence = max(b - a for a, b in zip([sent, *ends], ends, strict=False))
    return result, silence, answered - sent, server.status("VmHWM") - before


def _report(what: str, size: int, silence: float, took: float, peak: int) -> None:
    print(
        f"\n{what}: message {size / MiB:.1f} MiB, request {took:.2f} s, longest health silence "
        f"{silence * 1000:.0f} ms, peak RSS +{peak / MiB:.0f} MiB ({peak / size:.1f}x the message)"
    )


def _typed_int32(name: str, count: int) -> bytes:
    msg = pb.ModelInferRequest(model_name="mlp")
    t = msg.inputs.add(name=name, datatype="INT32", shape=[count])
    t.contents.int_contents.extend(np.ones(count, np.int32).tolist())  # one byte each on the wire
    return msg.SerializeToString()


def _raw_bytes(model: str, name: str, count: int, width: int) -> bytes:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name=name, datatype="BYTES", shape=[count // 2, 2])
    msg.raw_input_contents.append((width.to_bytes(4, "little") + b"a" * width) * count)  # tritonclient's layout
    return msg.SerializeToString()


def test_maximal_grpc_typed_message_keeps_health_answering(server: Server) -> None:
    # The largest message the limit accepts, as one-byte varints: the most values per byte. The model
    # has no input 'z', so the message decodes fully and is then refused (what is measured is the decode).
    wire = _typed_int32("z", LIMIT - 64)
    assert len(wire) <= LIMIT
    (code, details), silence, took, peak = _while_polling(server, lambda: _model_infer(server.target, wire))
    _report("gRPC int_contents", len(wire), silence, took, peak)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'z'" in details, details
    assert silence < MAX_SILENCE, (silence, took)
    tensor = (LIMIT - 64) * 4  # INT32: four bytes in memory for each one-byte value
    assert peak < 2 * len(wire) + tensor + SLACK, peak / MiB


def test_maximal_grpc_raw_bytes_keeps_health_answering(server: Server) -> None:
    # Stock tritonclient's encoding of 2-byte strings: 6 bytes a value.
    wire = _raw_bytes("strings", "z", (LIMIT - 64) // 6 // 2 * 2, 2)
    (code, details), silence, took, peak = _while_polling(server, lambda: _model_infer(server.target, wire))
    _report("gRPC raw BYTES", len(wire), silence, took, peak)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'z'" in details, details
    assert silence < MAX_SILENCE, (silence, took)
    tensor = (len(wire) // 6) * 56  # a Python bytes object and its pointer, per value
    assert peak < 2 * len(wire) + tensor + SLACK, peak / MiB


def _binary_body(name: str, count: int, width: int, shape: bytes = b"") -> tuple[bytes, dict[str, str]]:
    chunk = (width.to_bytes(4, "little") + b"a" * width) * count
    header = b'{"inputs":[{"name":"%s","datatype":"BYTES","shape":[%s%d,2],"parameters":{"binary_data_size":%d}}]}' % (
        name.encode(),
        shape,
        count // 2,
        len(chunk),
    )
    headers = {"content-type": v2.BINARY_CONTENT_TYPE, v2.HEADER_LENGTH: str(len(header))}
    return header + chunk, headers


def test_maximal_binary_bytes_body_keeps_health_answering(server: Server) -> None:
    body, headers = _binary_body("z", (LIMIT - 256) // 6 // 2 * 2, 2)
    assert len(body) <= LIMIT

    def send() -> httpx.Response:
        return httpx.post(f"{server.base}/v2/models/strings/infer", content=body, headers=headers, timeout=120)

    r, silence, took, peak = _while_polling(server, send)
    _report("HTTP binary BYTES", len(body), silence, took, peak)
    assert r.status_code == 400 and "'z'" in r.text, r.text[:300]
    assert silence < MAX_SILENCE, (silence, took)
    assert peak < 2 * len(body) + (len(body) // 6) * 56 + SLACK, peak / MiB
    # Split by numpy (equal lengths): ~0.4 s here, against 1.6-2.1 s for one Python step per element,
    # which values of unequal length (1 and 3 bytes, the same body size) still take: compared in one
    # run, so that a loaded machine slows both.
    count = (LIMIT - 256) // 6 // 2 * 2
    chunk = (b"\x01\x00\x00\x00a" + b"\x03\x00\x00\x00abc") * (count // 2)
    varied = body[: int(headers[v2.HEADER_LENGTH])] + chunk
    t0 = time.monotonic()
    assert (
        httpx.post(f"{server.base}/v2/models/strings/infer", content=varied, headers=headers, timeout=120).status_code
        == 400
    )
    assert took < (time.monotonic() - t0) / 2, (took, time.monotonic() - t0)


def test_bytes_to_a_number_input_are_refused_from_the_head(server: Server) -> None:
    # A maximal BYTES tensor sent to the FP32 input 'x': refused before one element is split.
    body, headers = _binary_body("x", (LIMIT - 256) // 6 // 2 * 2, 2)
    before = server.reset_peak()
    t0 = time.monotonic()
    r = httpx.post(f"{server.base}/v2/models/mlp/infer", content=body, headers=headers, timeout=60)
    took = time.monotonic() - t0
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["tensor"] == "x"
    assert doc["error"].startswith("input 'x': expected FP32 shape [-1, 4], got object shape [")
    assert "the request declares BYTES, the model takes FP32" in doc["error"]
    # No per-element objects: the body (read, joined) and nothing near 56 bytes a value more.
    assert server.status("VmHWM") - before < 2 * len(body) + SLACK, (server.status("VmHWM") - before) / MiB

    wire = _raw_bytes("mlp", "x", (LIMIT - 64) // 6 // 2 * 2, 2)
    t1 = time.monotonic()
    code, details = _model_infer(server.target, wire)
    took = max(took, time.monotonic() - t1)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input 'x': expected FP32 shape [-1, 4], got object shape [")
    assert "the request declares BYTES, the model takes FP32" in details
    # Fast: the time to send 16 MiB over loopback, not to split 2.8 M elements (~2 s before).
    assert took < 1.0, took


# -- the wire reader agrees with protobuf ---------------------------------------------------------


def _both_ways(wire: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(what decoding upb's parse gives, what the lean wire reader gives): a request, or the error."""
    from google.protobuf.message import DecodeError

    from aimass.errors import SchemaError
    from aimass.protocol.grpc import codec

    out: list[Any] = []
    for lean in (False, True):
        with monkeypatch.context() as m:
            m.setattr(v2, "LEAN_BODY_SIZE", 0 if lean else 1 << 40)  # the large-message reader, or upb
            try:
                message = codec.read_infer_request(wire)
                assert (message.contents is not None) == lean
                out.append(codec.decode_infer_request(message))
            except (SchemaError, DecodeError) as e:
                out.append(type(e))
    return out[0], out[1]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, type) or isinstance(b, type):
        return isinstance(a, type) and isinstance(b, type)
    if a.inputs.keys() != b.inputs.keys() or (a.id, a.parameters, a.outputs) != (b.id, b.parameters, b.outputs):
        return False
    return all(
        x.dtype == y.dtype and x.shape == y.shape and x.tolist() == y.tolist()
        for x, y in ((a.inputs[k], b.inputs[k]) for k in a.inputs)
    )


@pytest.mark.parametrize(
    ("datatype", "field", "low", "high"),
    [
        ("INT32", "int_contents", -(2**31), 2**31),
        ("INT8", "int_contents", -128, 128),
        ("INT64", "int64_contents", -(2**63), 2**63 - 1),
        ("UINT16", "uint_contents", 0, 2**16),
        ("UINT64", "uint64_contents", 0, 2**64 - 1),
        ("BOOL", "bool_contents", 0, 2),
        ("FP32", "fp32_contents", 0, 0),
        ("FP64", "fp64_contents", 0, 0),
        ("BYTES", "bytes_contents", 0, 0),
    ],
)
def test_large_message_reader_decodes_what_protobuf_does(
    monkeypatch: pytest.MonkeyPatch, datatype: str, field: str, low: int, high: int
) -> None:
    rng = np.random.default_rng(0)
    msg = pb.ModelInferRequest(model_name="m", id="r")
    msg.parameters["p"].int64_param = 3
    msg.outputs.add(name="y")
    t = msg.inputs.add(name="x", datatype=datatype, shape=[2, 500])
    values = getattr(t.contents, field)
    if datatype == "BYTES":
        values.extend(bytes(rng.integers(0, 256, rng.integers(0, 200)).astype(np.uint8)) for _ in range(1000))
    elif datatype.startswith("FP"):
        values.extend(rng.standard_normal(1000).tolist())
    else:
        dtype = np.uint64 if low == 0 and high > 2**63 else np.int64
        values.extend(rng.integers(low, high, 1000, dtype=dtype).tolist())
    msg.inputs.add(name="w", datatype="BYTES", shape=[3]).contents.bytes_contents.extend([b"ab", b"cd", b"ef"])
    a, b = _both_ways(msg.SerializeToString(), monkeypatch)
    assert not isinstance(a, type) and _same(a, b)
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype="BYTES", shape=[2])
    raw.raw_input_contents.append(b"\x01\x00\x00\x00a\x03\x00\x00\x00bcd")
    a, b = _both_ways(raw.SerializeToString(), monkeypatch)
    assert not isinstance(a, type) and _same(a, b) and b.inputs["x"].tolist() == [b"a", b"bcd"]


def test_large_message_reader_refuses_what_protobuf_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    msg = pb.ModelInferRequest(model_name="m", id="r")
    msg.inputs.add(name="x", datatype="INT32", shape=[50]).contents.int_contents.extend(range(-25, 25))
    msg.inputs.add(name="s", datatype="BYTES", shape=[3]).contents.bytes_contents.extend([b"ab", b"", b"xyz"])
    msg.inputs.add(name="f", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
    wire = msg.SerializeToString()
    for _ in range(1500):  # a few bytes changed at random: both accept alike, or both refuse
        bad = bytearray(wire)
        for at in rng.integers(0, len(bad), rng.integers(1, 4)):
            bad[at] = int(rng.integers(0, 256))
        a, b = _both_ways(bytes(bad), monkeypatch)
        assert _same(a, b), (bytes(bad), a, b)
