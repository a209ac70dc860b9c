"""Throughput and latency of ``aimass serve`` against MLServer and Triton on the same small model.

Every server runs as its own process on 127.0.0.1 and serves the same 4-feature logistic
regression (trained identically on the same data): aimass as the ONNX conversion (skl2onnx),
MLServer with mlserver-sklearn (``predict_proba``), Triton through nvidia-pytriton (the same
coefficients as a numpy function with Triton's dynamic batcher on). One async load generator
(aiohttp on uvloop, in this process) sends the same 1-row V2 JSON request at concurrency 1, 4,
16 and 64; runs are interleaved server by server and repeated, and the medians are reported with
the ratios. A second section measures dynamic batching on a model whose per-call cost is large (a
deep, narrow ONNX MLP of 32-wide layers, ``--deep-layers 300,1000`` for one section per depth):
aimass with batching against aimass without, at c=16 and 64, over HTTP/JSON and over gRPC, with the
rows per model call the batcher achieved (from ``/metrics``). Batching lifts throughput by up to
(per-request transport cost + per-call cost) / per-request transport cost, so its lift depends on
how the model's call compares with the transport: the printed one-call timings say which case a run is.
A gRPC section (``--skip grpc`` to leave it out) drives aimass (``serve --grpc-port``), Triton
(PyTriton, dynamic batching) and MLServer over gRPC with one ``grpc.aio`` load generator sending the
same 1-row ``ModelInferRequest`` (raw tensor contents) at c=16 and c=64, then aimass and Triton with
``perf_analyzer -i grpc``. Load averages are printed after each section.

The peers live in their own virtual environments under ``benchmarks/.peers/`` (gitignored),
created on first run: ``mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0`` and
``nvidia-pytriton==0.7.0 numpy<2`` (see shared PEERS.md for both sets of pitfalls).

Run:  .venv/bin/python benchmarks/serve_throughput.py [--seconds 3] [--repeats 3] [--skip triton]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import N_FEATURES, closed_loop, deep_mlp_onnx, free_port, median_run

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / ".peers"
VENV_BIN = Path(sys.executable).parent
PEER_PACKAGES = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],
    "pytriton": ["nvidia-pytriton==0.7.0", "numpy<2"],
    # perf_analyzer ships inside the tritonclient wheel and links libcudart, which the CUDA runtime
    # wheel provides (no GPU needed to run it against an HTTP server).
    "perf": ["tritonclient[http]==2.51.0", "nvidia-cuda-runtime-cu12==12.9.79"],
}

# Trains the same logistic regression in whichever environment runs it (the peer's own sklearn).
TRAIN = """
import json, sys, numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
x = rng.standard_normal((512, 4)).astype(np.float32)
y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) > 0).astype(np.int64)
clf = LogisticRegression(max_iter=200).fit(x, y)
if len(sys.argv) > 1:
    import joblib
    joblib.dump(clf, sys.argv[1])
print(json.dumps({"coef": clf.coef_.tolist(), "intercept": clf.intercept_.tolist()}))
"""

PYTRITON_SERVER = """
import json, sys, numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

coef = json.loads(sys.argv[1]); port = int(sys.argv[2]); batching = sys.argv[3] == "1"
w = np.array(coef["coef"], np.float32).T; b = np.array(coef["intercept"], np.float32)

@batch
def infer(input):
    p = 1.0 / (1.0 + np.exp(-(input @ w + b)))
    return {"probabilities": np.concatenate([1.0 - p, p], axis=1).astype(np.float32)}

config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1", grpc_port=port + 1,
                      metrics_address="127.0.0.1", metrics_port=port + 2)
# perf_analyzer reads model statistics, which PyTriton guards with a random token unless given one.
import os
from pytriton.triton import TritonSecurityConfig
token = os.environ.get("BENCH_TRITON_TOKEN")
with Triton(config=config, security_config=TritonSecurityConfig(access_token=token) if token else None) as triton:
    triton.bind(
        model_name="logreg", infer_func=infer,
        inputs=[Tensor(name="input", dtype=np.float32, shape=(4,))],
        outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(2,))],
        config=ModelConfig(max_batch_size=64 if batching else 1,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=100) if batching else None),
        strict=False,
    )
    triton.serve()
"""


def peer_python(name: str) -> Path:
    """The peer's venv python, creating the venv on first use."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {PEER_PACKAGES[name]} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PEER_PACKAGES[name]], check=True)
    return python


# -- models -----------------------------------------------------------------------------------------


def build_logreg_onnx(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The logistic regression as an aimass package (ONNX via skl2onnx); returns its coefficients too."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    from aimass import Model

    coef = json.loads(subprocess.run([sys.executable, "-c", TRAIN], check=True, capture_output=True, text=True).stdout)
    clf = LogisticRegression()
    clf.coef_ = np.array(coef["coef"])
    clf.intercept_ = np.array(coef["intercept"])
    clf.classes_ = np.array([0, 1])
    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )
    path = directory / "logreg.onnx"
    path.write_bytes(onx.SerializeToString())
    Model.load(path).save(directory / "repo" / "logreg" / "1", overwrite=True)
    return directory / "repo", coef


def build_deep_mlp(directory: Path, layers: int = 300, width: int = 32) -> Path:
    """A deep, narrow ONNX MLP (4 -> 32 x layers -> 2): the per-call cost (hundreds of kernel launches)
    dwarfs the per-row cost, as in most real models at small batch: the case dynamic batching is for."""
    from aimass import Model

    path = deep_mlp_onnx(directory / "deep.onnx", layers, width, input_name="input")
    Model.load(path).save(directory / "deep" / "deep" / "1", overwrite=True)
    return directory / "deep"


def model_call_us(package: Path) -> str:
    from aimass import Model

    m = Model.load(package)
    out = []
    for rows in (1, 64):
        x = np.ones((rows, N_FEATURES), np.float32)
        for _ in range(10):
            m.predict(x)
        t0 = time.perf_counter()
        for _ in range(50):
            m.predict(x)
        out.append(f"{(time.perf_counter() - t0) / 50 * 1e3:.2f} ms at {rows} row(s)")
    return ", ".join(out)


# -- servers ----------------------------------------------------------------------------------------


class ServerNotReady(RuntimeError):
    """A server (ours or a peer) that exited or did not answer ready in time; the message ends its log."""


class Server:
    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        model: str,
        env: dict[str, str] | None = None,
        ready_path: str | None = None,
    ) -> None:
        self.name, self.port, self.model = name, port, model
        self.url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        # What answers 200 once the server serves: V2's model-ready route unless the server has its own.
        self.ready_path = ready_path or f"/v2/models/{model}/ready"
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        ready = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerNotReady(f"{self.name} exited; the end of {self.log.name}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready, timeout=1).status_code == 200:
                    return
            time.sleep(0.25)
        raise ServerNotReady(
            f"{self.name} not ready after {timeout:.0f} s; the end of {self.log.name}:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def aimass_server(name: str, repo: Path, model: str, *extra: str) -> Server:
    port = free_port()
    cmd = [str(VENV_BIN / "aimass"), "serve", str(repo), "--port", str(port), *extra]
    return Server(name, cmd, port, model)


def aimass_variant(name: str, repo: Path, model: str, variant: str) -> Server:
    """aimass's app under other stacks: uvicorn on asyncio+h11, or the infer route under Starlette."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-variant", variant, "--port", str(port), "--repo", str(repo)]
    return Server(name, cmd, port, model)


def mlserver_server(work: Path, parallel_workers: int | None = None) -> Server:
    """MLServer on the logistic regression; ``parallel_workers=0`` runs inference in its main process
    (fewer processes to start: what the compatibility test uses), ``None`` keeps MLServer's default."""
    python = peer_python("mlserver")
    model_dir = work / "mlserver" / "logreg"
    model_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), "-c", TRAIN, str(model_dir / "model.joblib")], check=True, capture_output=True)
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "logreg",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}],
                "parameters": {"uri": "./model.joblib", "version": "1", "extra": {"predict_fn": "predict_proba"}},
            }
        )
    )
    port = free_port(2)
    settings: dict[str, Any] = {"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "host": "127.0.0.1"}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (work / "mlserver" / "settings.json").write_text(json.dumps(settings))
    cmd = [str(python.parent / "mlserver"), "start", str(work / "mlserver")]
    return Server("mlserver", cmd, port, "logreg")


def triton_server(coef: dict[str, Any], work: Path, batching: bool = True, access_token: str = "") -> Server:
    python = peer_python("pytriton")
    base = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port(3)
    tmp = work / "triton-tmp"
    tmp.mkdir(exist_ok=True)
    env = {"LD_LIBRARY_PATH": f"{base}:{os.environ.get('LD_LIBRARY_PATH', '')}", "TMPDIR": str(tmp)}
    if access_token:
        env["BENCH_TRITON_TOKEN"] = access_token
    cmd = [str(python), "-c", PYTRITON_SERVER, json.dumps(coef), str(port), "1" if batching else "0"]
    return Server("triton" if batching else "triton-nobatch", cmd, port, "logreg", env=env)


# -- load generator ---------------------------------------------------------------------------------


def request_body(rng: np.random.Generator) -> bytes:
    row = [round(float(v), 6) for v in rng.standard_normal(N_FEATURES)]
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, N_FEATURES], "data": row}]}
    ).encode()


async def drive(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """Closed loop: ``concurrency`` workers each send, wait, send. Returns (req/s, p50 ms, p99 ms, errors)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> bool:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status == 200

        return await closed_loop(call, concurrency, seconds)


def run_load(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(drive(url, body, concurrency, seconds))
    return asyncio.run(drive(url, body, concurrency, seconds))


def table(
    servers: list[Server], levels: list[int], repeats: int, seconds: float, body: bytes
) -> dict[tuple[str, int], tuple[float, float, float, int]]:
    results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
    for c in levels:
        for r in range(repeats):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]  # rotate who goes first
            for s in order:
                results.setdefault((s.name, c), []).append(run_load(s.url, body, c, seconds))
    return {key: median_run(runs) for key, runs in results.items()}


def report(
    title: str, med: dict[tuple[str, int], tuple[float, float, float, int]], names: list[str], levels: list[int]
) -> None:
    print(f"\n{title}")
    print(f"{'server':<20}" + "".join(f"{'c=' + str(c):>28}" for c in levels))
    for n in names:
        cells = []
        for c in levels:
            rps, p50, p99, err = med[(n, c)]
            cells.append(f"{rps:>8.0f}/s {p50:>6.2f}/{p99:>6.2f} ms" + (f" E{err}" if err else ""))
        print(f"{n:<20}" + "".join(f"{cell:>28}" for cell in cells))
    ref = names[0]
    for n in names[1:]:
        ratios = "  ".join(
            f"c={c}: {med[(ref, c)][0] / med[(n, c)][0]:.2f}x rps, p99 {med[(ref, c)][2] / med[(n, c)][2]:.2f}x"
            for c in levels
        )
        print(f"{ref} / {n}: {ratios}   (p99 ratio < 1: {ref} has the lower p99)")


# -- gRPC ---------------------------------------------------------------------------------------------


def grpc_request(rng: np.random.Generator, model: str = "logreg") -> Any:
    """The same 1-row request for every server, in raw_input_contents (what tritonclient sends)."""
    from aimass.protocol.grpc import codec

    row = rng.standard_normal((1, N_FEATURES)).astype(np.float32)
    return codec.encode_infer_request({"input": row}, model_name=model)


def rows_per_call(server: Server) -> str:
    """Mean rows per model call so far, from the server's ``/metrics`` (``aimass_batch_size``): whether
    requests were merged."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for k in total:
            if line.startswith(f"aimass_batch_size_{k}{{") and f'model="{server.model}"' in line:
                total[k] += float(line.rsplit(" ", 1)[1])
    return f"{total['sum'] / total['count']:.1f}" if total["count"] else "n/a"


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


async def drive_grpc(target: str, request: Any, concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """``drive`` over gRPC: one grpc.aio channel, ``concurrency`` closed-loop workers."""
    import grpc

    from aimass.protocol.grpc import grpc_service_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        infer = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer

        async def call() -> bool:
            try:
                await infer(request, timeout=10)
            except grpc.RpcError:
                return False
            return True

        return await closed_loop(call, concurrency, seconds)


PERF_ANALYZER = PEERS / "perf" / "bin" / "perf_analyzer"


TRITON_TOKEN = "aimass-benchmark-token"  # lets perf_analyzer read PyTriton's (guarded) model statistics


def perf_analyzer_grpc(
    target: str, concurrency: int, seconds: float, model: str = "logreg", extra: tuple[str, ...] = ()
) -> tuple[float, float, float, int]:
    """Triton's C++ load generator, ``perf_analyzer -i grpc``, on ``model``: (req/s, p50, p99, failed).

    ``extra``: more arguments (``--shape input:1,4`` for a model served unbatched, whose config has a
    dynamic first dimension that perf_analyzer will not guess)."""
    import re

    libs = sorted((PEERS / "perf").glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(p) for p in libs)}
    window = str(max(500, int(seconds * 1000 / 3)))  # three windows of seconds/3 each
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", target, "-i", "grpc", "--concurrency-range", str(concurrency),
           "--measurement-interval", window, "--stability-percentage", "1000", "--max-trials", "3",
           "-H", f"triton-grpc-protocol-triton-access-token:{TRITON_TOKEN}", *extra]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    found = {k: re.search(rf"{k}: ([0-9.]+)", out) for k in ("Throughput", "p50 latency", "p99 latency")}
    if any(m is None for m in found.values()):
        print(f"perf_analyzer failed on {target}: {out.strip().splitlines()[-2:] or ['no output']}")
        return 0.0, 0.0, 0.0, 1
    rps, p50, p99 = (float(m.group(1)) for m in found.values() if m is not None)
    return rps, p50 / 1e3, p99 / 1e3, 0


def perf_analyzer_works() -> bool:
    if not PERF_ANALYZER.exists():
        return False
    libs = sorted((PEERS / "perf").glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(p) for p in libs)}
    return subprocess.run([str(PERF_ANALYZER), "--version"], env=env, capture_output=True).returncode != 127


def grpc_table(
    targets: dict[str, str],
    levels: list[int],
    repeats: int,
    seconds: float,
    request: Any,
    perf: bool = False,
    model: str = "logreg",
    extra: dict[str, tuple[str, ...]] | None = None,
) -> dict[tuple[str, int], tuple[float, float, float, int]]:
    """``table`` for gRPC targets (name -> host:port), interleaved and rotated the same way; the
    load generator is grpc.aio in this process, or perf_analyzer with ``perf``."""
    names = list(targets)
    results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
    for c in levels:
        for r in range(repeats):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                runs = results.setdefault((n, c), [])
                if perf:
                    runs.append(perf_analyzer_grpc(targets[n], c, seconds, model, (extra or {}).get(n, ())))
                else:
                    runs.append(asyncio.run(drive_grpc(targets[n], request, c, seconds)))
    return {key: median_run(runs) for key, runs in results.items()}


def grpc_section(work: Path, repo: Path, coef: dict[str, Any], args: argparse.Namespace, skip: set[str]) -> None:
    grpc_port = free_port()
    http_port = free_port()
    cmd = [str(VENV_BIN / "aimass"), "serve", str(repo), "--port", str(http_port), "--grpc-port", str(grpc_port)]
    servers = [Server("aimass-grpc", cmd, http_port, "logreg")]
    targets = {"aimass-grpc": f"127.0.0.1:{grpc_port}"}
    if "triton" not in skip:
        servers.append(triton_server(coef, work, access_token=TRITON_TOKEN))
        targets["triton-grpc"] = f"127.0.0.1:{servers[-1].port + 1}"
    if "mlserver" not in skip:
        servers.append(mlserver_server(work / "grpc"))
        targets["mlserver-grpc"] = f"127.0.0.1:{servers[-1].port + 1}"
    try:
        for s in servers:
            s.wait()
        levels = [16, 64]
        request = grpc_request(np.random.default_rng(0))
        med = grpc_table(targets, levels, args.repeats, args.seconds, request)
        report("gRPC: 4-feature logreg, 1-row raw-contents requests (grpc.aio)", med, list(targets), levels)
        print(f"aimass rows per model call (all gRPC runs so far): {rows_per_call(servers[0])}; {load_average()}")
        if perf_analyzer_works():
            # MLServer has no ModelConfig RPC, which perf_analyzer reads first: aimass and Triton only.
            pair = {n: t for n, t in targets.items() if n != "mlserver-grpc"}
            med = grpc_table(pair, levels, args.repeats, args.seconds, request, perf=True)
            report("gRPC, the same servers driven by perf_analyzer -i grpc (C++)", med, list(pair), levels)
            print(f"{load_average()}")
    finally:
        for s in servers:
            s.stop()


def grpc_deep_section(deep_repo: Path, layers: int, args: argparse.Namespace, options: list[str]) -> None:
    """Dynamic batching over gRPC on the deep MLP: the same server with batching on and off, c=16 and 64."""
    servers, targets = [], {}
    for name, batch in (("deep-grpc-batched", "64"), ("deep-grpc-nobatch", "0")):
        grpc_port, http_port = free_port(), free_port()
        cmd = [str(VENV_BIN / "aimass"), "serve", str(deep_repo), "--port", str(http_port),
               "--grpc-port", str(grpc_port), "--max-batch-size", batch, *options]  # fmt: skip
        servers.append(Server(name, cmd, http_port, "deep"))
        targets[name] = f"127.0.0.1:{grpc_port}"
    try:
        for s in servers:
            s.wait()
        request = grpc_request(np.random.default_rng(0), model="deep")
        med = grpc_table(targets, [16, 64], args.repeats, args.seconds, request)
        report(f"gRPC: {layers}-layer MLP, dynamic batching on vs off (grpc.aio)", med, list(targets), [16, 64])
        print(f"rows per model call, batched: {rows_per_call(servers[0])}; {load_average()}")
        if perf_analyzer_works():  # the C++ generator leaves the server more of the two cores
            shape: dict[str, tuple[str, ...]] = {"deep-grpc-nobatch": ("--shape", f"input:1,{N_FEATURES}")}
            med = grpc_table(targets, [16, 64], args.repeats, args.seconds, request, True, "deep", shape)
            title = f"gRPC: {layers}-layer MLP, dynamic batching on vs off (perf_analyzer -i grpc)"
            report(title, med, list(targets), [16, 64])
            print(f"rows per model call, batched (all gRPC runs): {rows_per_call(servers[0])}; {load_average()}")
    finally:
        for s in servers:
            s.stop()


# -- variants of our own server, for the stack comparison ----------------------------------------------


def serve_variant(variant: str, port: int, repo: Path) -> None:
    import uvicorn

    from aimass.server import create_app

    app = create_app(repository=repo)
    if variant == "asyncio-h11":
        uvicorn.run(app, host="127.0.0.1", port=port, loop="asyncio", http="h11", log_level="warning", access_log=False)
        return
    # The same repository, codec and error mapping behind Starlette's router, Request and Response.
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from aimass.protocol import v2
    from aimass.server import error_response

    async def infer(request: Request) -> Response:
        try:
            served = app.repository.get(request.path_params["name"], None)
            header = request.headers.get(v2.HEADER_LENGTH)
            req = v2.decode_request(await request.body(), None if header is None else int(header))
            out = await served.infer(req.inputs)
            body, _ = v2.encode_response(out, model_name=served.name, model_version=served.version)
            return Response(body, media_type="application/json")
        except Exception as e:
            status, payload = error_response(e)
            return Response(payload, status_code=status, media_type="application/json")

    async def ready(request: Request) -> Response:
        app.repository.get(request.path_params["name"], None)
        return JSONResponse({})

    routes = [
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/ready", ready, methods=["GET"]),
    ]
    star = Starlette(routes=routes)
    uvicorn.run(
        star, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def deep_section(work: Path, layers: int, args: argparse.Namespace, skip: set[str]) -> None:
    """Dynamic batching on the deep MLP of ``layers`` layers: on (no delay, and 2 ms) vs off, HTTP then gRPC."""
    work.mkdir(parents=True, exist_ok=True)
    deep_repo = build_deep_mlp(work, layers)
    options = [a for o in args.deep_option for a in ("--option", o)]
    if options:
        print(f"\ndeep MLP served with {options}")
    print(f"\n{layers}-layer MLP, one call in-process: {model_call_us(deep_repo / 'deep' / '1')}")
    batched = ("--max-batch-size", "64")
    pair = [
        aimass_server("deep-batched", deep_repo, "deep", *batched, *options),
        aimass_server("deep-nobatch", deep_repo, "deep", "--max-batch-size", "0", *options),
        aimass_server("deep-batched-2ms", deep_repo, "deep", *batched, "--max-queue-delay", "2ms", *options),
    ]
    try:
        for s in pair:
            s.wait()
        med = table(pair, [16, 64], args.repeats, args.seconds, request_body(np.random.default_rng(0)))
        names = [s.name for s in pair]
        report(f"{layers}-layer 32-wide MLP, dynamic batching on vs off (HTTP/JSON)", med, names, [16, 64])
        report("", med, [names[2], names[1]], [16, 64])
        print(f"rows per model call: {names[0]} {rows_per_call(pair[0])}, {names[2]} {rows_per_call(pair[2])}")
        print(load_average())
    finally:
        for s in pair:
            s.stop()
    if "grpc" not in skip:
        grpc_deep_section(deep_repo, layers, args, options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--skip", default="", help="comma list of: logreg, mlserver, triton, stacks, deep, grpc")
    ap.add_argument("--deep-option", action="append", default=[], help="aimass serve --option for the deep MLP")
    ap.add_argument("--deep-layers", default="300", help="comma list: one deep-MLP section per depth")
    ap.add_argument("--setup-peers", action="store_true", help="only create the peer environments, then exit")
    ap.add_argument("--serve-variant", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_variant:
        serve_variant(args.serve_variant, args.port, args.repo)
        return
    if args.setup_peers:
        for name in PEER_PACKAGES:
            peer_python(name)
        return
    skip = set(filter(None, args.skip.split(",")))
    levels = [int(c) for c in args.levels.split(",")]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; {load_average()}")
    print(f"{args.seconds:.0f} s per run, {args.repeats} interleaved repeats, medians; cells: req/s p50/p99 ms")
    body = request_body(np.random.default_rng(0))
    with tempfile.TemporaryDirectory(prefix="aimass-bench-") as tmp:
        work = Path(tmp)
        repo, coef = build_logreg_onnx(work)
        servers = []
        if "logreg" not in skip:
            servers += [
                aimass_server("aimass", repo, "logreg"),
                aimass_server("aimass-nobatch", repo, "logreg", "--max-batch-size", "0"),
            ]
        if "mlserver" not in skip and servers:
            servers.append(mlserver_server(work))
        if "triton" not in skip and servers:
            servers.append(triton_server(coef, work))
        if "stacks" not in skip and servers:
            servers.append(aimass_variant("aimass-asyncio-h11", repo, "logreg", "asyncio-h11"))
            servers.append(aimass_variant("aimass-starlette", repo, "logreg", "starlette"))
        try:
            for s in servers:
                s.wait()
            if servers:
                med = table(servers, levels, args.repeats, args.seconds, body)
                report("4-feature logistic regression, 1-row JSON requests", med, [s.name for s in servers], levels)
                print(load_average())
        finally:
            for s in servers:
                s.stop()
        if "grpc" not in skip:
            grpc_section(work, repo, coef, args, skip)
        if "deep" not in skip:
            for layers in (int(n) for n in args.deep_layers.split(",")):
                deep_section(work / f"deep{layers}", layers, args, skip)


if __name__ == "__main__":
    main()
