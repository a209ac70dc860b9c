"""Models on demand under a budget: 30 real ONNX models, room for 3, many concurrent clients.

Every model answers differently (y = sum(x) * (i + 1)), so a request answered by the wrong model,
or by none, shows; the budget is checked from the repository's own accounting, from the
repository index and from the process's resident memory.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimass import Model, ModelLoadError
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.budget import Budget, package_bytes, resident_bytes

N_MODELS = 30
WIDTH = 256
COLUMNS = 1024  # a 1 MiB weight per model: 30 loaded hold more than 60 MiB (ORT keeps a copy)
ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}


def _weighted_onnx(path: Path, factor: float) -> Path:
    """y = ReduceSum(x @ W) with W = factor / COLUMNS everywhere: y = factor * sum(x), exactly for small ints."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((WIDTH, COLUMNS), factor / COLUMNS, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1),
        ],
        "weighted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(N_MODELS):
        onnx_file = _weighted_onnx(root / f"m{i}.onnx", float(i + 1))
        Model.load(onnx_file).save(root / f"m{i}" / "1")
        onnx_file.unlink()
    return root


def _expected(i: int, x: np.ndarray) -> np.ndarray:
    return (x.sum(axis=1, keepdims=True) * (i + 1)).astype(np.float32)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def _traffic(app: object, requests: int, clients: int, seed: int, watch: list[int]) -> None:
    """``clients`` concurrent clients send ``requests`` requests to random models; every answer is checked."""
    rng = random.Random(seed)
    plan = [rng.randrange(N_MODELS) for _ in range(requests)]
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:

        async def one_client(k: int) -> None:
            xr = np.random.default_rng(k)
            for i in plan[k::clients]:
                x = xr.integers(0, 4, size=(2, WIDTH)).astype(np.float32)
                body, headers = v2.encode_request({"x": x}, binary=True)
                r = await client.post(f"/v2/models/m{i}/infer", content=body, headers=headers)
                assert r.status_code == 200, r.text
                got = v2.decode_response(r.content, r.headers.get("inference-header-content-length"))
                assert got.model_name == f"m{i}"
                np.testing.assert_array_equal(got.outputs["y"], _expected(i, x))

        async def watch_index() -> None:
            while True:
                r = await client.post("/v2/repository/index", content=b"{}")
                watch.append(sum(e["state"] == "READY" for e in r.json()))
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch_index())
        try:
            await asyncio.gather(*(one_client(k) for k in range(clients)))
        finally:
            watcher.cancel()


def test_thirty_models_with_room_for_three(repo: Path) -> None:
    app = create_app(repository=repo, max_loaded_models=3, model_options=ONE_THREAD, max_batch_size=0)
    assert app.repository.loaded() == []  # nothing loads before it is asked for
    index = app.repository.index()
    assert len(index) == N_MODELS and all(e["state"] == "UNAVAILABLE" for e in index)
    rss_before = resident_bytes()
    ready_counts: list[int] = []
    asyncio.run(_traffic(app, requests=120, clients=16, seed=1, watch=ready_counts))
    repo_ = app.repository
    assert repo_.peak_loaded <= 3  # loaded + loading + draining, at every moment
    assert ready_counts and max(ready_counts) <= 3
    assert len(repo_.loaded()) <= 3
    text = app.metrics.render()[0].decode()
    loads = _metric(text, "aimass_model_loads_total")
    evictions = _metric(text, "aimass_model_evictions_total")
    assert loads >= N_MODELS - 3  # random traffic over 30 models reached nearly all of them
    assert evictions == loads - len(repo_.loaded())  # every load beyond three made room by an eviction
    assert _metric(text, "aimass_models_loaded") == len(repo_.loaded())
    assert _metric(text, "aimass_model_load_seconds_count") == loads
    # Resident memory stays near three models' worth (all 30 loaded: about 75 MiB here).
    grown = resident_bytes() - rss_before
    per_model = package_bytes(repo / "m0" / "1")
    assert grown < 3 * 4 * per_model + 16 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"
    evicted = [e for e in app.repository.index() if e["state"] == "UNAVAILABLE" and "evicted" in e.get("reason", "")]
    assert evicted, "the index says why a version is not loaded"


def test_memory_budget_holds_and_answers_stay_right(repo: Path) -> None:
    per_model = package_bytes(repo / "m0" / "1")
    # Room for several models, and for the first load's one-time growth: in a long test process a
    # model's first measured load has read up to 10 MB for these 1 MiB files (see budget.py).
    budget = 16 * per_model
    app = create_app(repository=repo, memory_budget=budget, model_options=ONE_THREAD, max_batch_size=0)
    asyncio.run(_traffic(app, requests=30, clients=8, seed=2, watch=[]))
    loaded = app.repository.loaded()
    assert loaded and sum(s.memory for s in loaded) <= budget
    assert all(s.memory >= per_model for s in loaded)  # never counted below its files
    text = app.metrics.render()[0].decode()
    assert 0 < _metric(text, "aimass_models_loaded_bytes") <= budget


def test_concurrent_first_requests_load_once(repo: Path) -> None:
    app = create_app(repository=repo, max_loaded_models=2, model_options=ONE_THREAD, max_batch_size=0)
    repository = app.repository

    async def main() -> None:
        got = await asyncio.gather(*(repository.acquire("m7", None) for _ in range(12)))
        assert len({id(s) for s in got}) == 1
        for s in got:
            repository.release(s)

    asyncio.run(main())
    text = app.metrics.render()[0].decode()
    assert _metric(text, "aimass_model_loads_total", model="m7") == 1


def test_a_busy_version_is_never_unloaded_under_its_request(repo: Path) -> None:
    """With room for one model, a second model's load waits until the first one's request is done."""
    app = create_app(repository=repo, max_loaded_models=1, model_options=ONE_THREAD, max_batch_size=0)
    repository = app.repository
    x = np.ones((1, WIDTH), np.float32)

    async def main() -> None:
        a = await repository.acquire("m0", None)  # a request holds m0
        load_b = asyncio.ensure_future(repository.acquire("m1", None))
        await asyncio.sleep(0.3)
        assert not load_b.done()  # m1 waits: m0 is evicted (no new requests) but still running one
        assert repository.peak_loaded <= 1
        assert "evicted" in {e["name"]: e.get("reason", "") for e in repository.index()}["m0"]
        out = await a.infer({"x": x})  # the held request still runs on its (evicted) model
        np.testing.assert_array_equal(out["y"], _expected(0, x))
        repository.release(a)
        b = await asyncio.wait_for(load_b, 30)
        np.testing.assert_array_equal((await b.infer({"x": x}))["y"], _expected(1, x))
        repository.release(b)
        assert repository.peak_loaded == 1

    asyncio.run(main())


def test_pinned_models_load_at_start_and_stay(repo: Path) -> None:
    app = create_app(repository=repo, max_loaded_models=2, pin=["m3"], model_options=ONE_THREAD)
    assert [s.name for s in app.repository.loaded()] == ["m3"]
    asyncio.run(_traffic(app, requests=10, clients=4, seed=3, watch=[]))
    assert "m3" in {s.name for s in app.repository.loaded()}
    assert app.repository.peak_loaded <= 2
    with pytest.raises(ModelLoadError, match="do not fit the budget"):
        create_app(repository=repo, max_loaded_models=1, pin=["m1", "m2"], model_options=ONE_THREAD)


def test_budget_refuses_negative_caps() -> None:
    with pytest.raises(ValueError, match="max_loaded_models must be >= 0"):
        Budget(max_loaded_models=-1)
    assert Budget(max_loaded_models=3).fits(3, 0) and not Budget(memory_budget=10).fits(1, 11)


def test_serve_options_reach_the_app(monkeypatch: pytest.MonkeyPatch, repo: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import aimass.server as server
    from aimass.cli import app as cli
    from aimass.server.shadow import ShadowRule

    built: list[Any] = []
    real_create_app = server.create_app

    def spy(*args: Any, **kwargs: Any) -> Any:
        built.append((kwargs, real_create_app(*args, **kwargs)))
        return built[-1][1]

    monkeypatch.setattr(server, "create_app", spy)
    monkeypatch.setattr(server, "serve", lambda *a, **k: None)  # parse and build, do not listen
    args = ["serve", str(repo), "--max-loaded-models", "3", "--memory-budget", "64MiB", "--pin", "m1", "--no-warmup"]
    args += ["--monitor", "off", "--log-payloads", str(tmp_path / "logs"), "--log-sample-rate", "0.5"]
    args += ["--shadow", "m1@production=2:0.5"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    kwargs, app = built[0]
    settings = kwargs["settings"]  # the flags under their own names
    assert settings.max_loaded_models == 3 and settings.memory_budget == 64 << 20 and settings.pin == ("m1",)
    assert settings.warmup is False and settings.monitor == "off"
    assert settings.shadow == (ShadowRule("m1", "production", "2", 0.5),)
    assert "loaded at start" in result.output and [s.name for s in app.repository.loaded()] == ["m1"]
    assert app.payload_log.sample_rate == 0.5
    app.payload_log.close()


def test_grpc_loads_on_demand_within_the_budget(repo: Path) -> None:
    # gRPC takes the same path as HTTP (App.infer, App.lookup): models load on their first call,
    # metadata of an unloaded model loads it, and an explicit load stays within the budget.
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from aimass.server.grpc import BackgroundServer

    app = create_app(repository=repo, max_loaded_models=1, model_options=ONE_THREAD, max_batch_size=0)
    server = BackgroundServer(app)
    client = grpcclient.InferenceServerClient(url=server.target)
    try:
        x = np.arange(2 * WIDTH, dtype=np.float32).reshape(2, WIDTH) % 3
        for i in (0, 1, 2, 0):
            request = grpcclient.InferInput("x", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            got = client.infer(f"m{i}", [request]).as_numpy("y")
            np.testing.assert_array_equal(got, _expected(i, x))
            assert len(app.repository.loaded()) == 1
        assert client.is_model_ready("m7")  # not loaded, but loadable on demand
        assert client.get_model_metadata("m7").name == "m7"
        client.load_model("m8")
        assert [s.name for s in app.repository.loaded()] == ["m8"]
    finally:
        client.close()
        server.stop()
