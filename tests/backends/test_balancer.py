"""Client-side balancing over several real ``aimass`` servers (uvicorn on real sockets): requests
spread, a slow endpoint gets fewer (least outstanding requests), a dead one is ejected without a
failed request, and it is re-admitted once it answers its health check again."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import serving

from aimass import Model, RemoteError
from aimass.backends.balancer import Balancer, BalancingTransport
from aimass.server import create_app


class Counting:
    """The real aimass app, counting inference requests and optionally delaying them."""

    def __init__(self, app: Any, delay: float = 0.0) -> None:
        self.app, self.delay, self.infers = app, delay, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            self.infers += 1
            if self.delay:
                await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


@contextlib.contextmanager
def server_on(app: Any, port: int) -> Iterator[str]:
    """uvicorn on a given port (so an endpoint can come back at the same address)."""
    with serving.live_server(app, port) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(Path(tmp_path_factory.mktemp("balancer")) / "mlp.onnx"))


@pytest.fixture
def servers(mlp: Model) -> Iterator[list[tuple[str, Counting]]]:
    apps = [Counting(create_app({"mlp": mlp}, max_batch_size=0)) for _ in range(3)]
    with contextlib.ExitStack() as stack:
        yield [(stack.enter_context(server_on(app, serving.free_port())), app) for app in apps]


def test_spreads_requests_and_answers_match(servers: list[tuple[str, Counting]], mlp: Model) -> None:
    urls = [u for u, _ in servers]
    transport = BalancingTransport(urls)
    remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"transport": transport})
    x = models.dataset(8)[0]
    for _ in range(30):
        np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-6)
    assert [app.infers for _, app in servers] == [10, 10, 10]  # one at a time: ties rotate


def test_remote_backend_endpoints_option(servers: list[tuple[str, Counting]], mlp: Model) -> None:
    urls = [u for u, _ in servers]
    remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"endpoints": urls[1:]})
    x = models.dataset(4)[0]
    for _ in range(12):
        np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-6)
    assert [app.infers for _, app in servers] == [4, 4, 4]


def test_slow_endpoint_gets_fewer_requests(mlp: Model) -> None:
    fast = [Counting(create_app({"mlp": mlp}, max_batch_size=0)) for _ in range(2)]
    slow = Counting(create_app({"mlp": mlp}, max_batch_size=0), delay=0.2)  # wide margin on a busy machine
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(server_on(app, serving.free_port())) for app in [*fast, slow]]
        remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"transport": BalancingTransport(urls)})
        x = models.dataset(4)[0]

        def client() -> None:
            for _ in range(40):
                remote.predict(x)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(a.infers for a in fast) + slow.infers == 160
    assert slow.infers < min(a.infers for a in fast) / 2, (slow.infers, [a.infers for a in fast])


def test_dead_endpoint_is_ejected_then_readmitted(mlp: Model) -> None:
    ports = [serving.free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    apps = [Counting(create_app({"mlp": mlp}, max_batch_size=0)) for _ in range(3)]
    transport = BalancingTransport(urls, ejection_time=0.2)
    x = models.dataset(4)[0]
    want = mlp.predict(x)["y"]
    with server_on(apps[0], ports[0]), server_on(apps[1], ports[1]):
        with server_on(apps[2], ports[2]):
            remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"transport": transport, "retries": 0})
            for _ in range(6):
                remote.predict(x)
            assert apps[2].infers == 2
        # The third server is gone: no request fails, it is ejected at the first refused connection.
        for _ in range(20):
            np.testing.assert_allclose(remote.predict(x)["y"], want, rtol=1e-6)
        assert apps[2].infers == 2
        assert transport.balancer.snapshot()[urls[2]]["ejected"] is True
        assert transport.balancer.healthy() == urls[:2]

        # Back at the same address: a background health probe re-admits it.
        with server_on(apps[2], ports[2]):
            deadline = time.monotonic() + 15
            while transport.balancer.snapshot()[urls[2]]["ejected"]:
                assert time.monotonic() < deadline, "not re-admitted"
                remote.predict(x)  # requests start the due probes
                time.sleep(0.05)
            before = apps[2].infers
            for _ in range(9):
                remote.predict(x)
            assert apps[2].infers - before == 3


def test_async_predict_is_balanced(servers: list[tuple[str, Counting]], mlp: Model) -> None:
    urls = [u for u, _ in servers]
    remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"transport": BalancingTransport(urls)})
    x = models.dataset(4)[0]

    async def many() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(remote.apredict(x) for _ in range(30)))

    for out in asyncio.run(many()):
        np.testing.assert_allclose(out["y"], mlp.predict(x)["y"], rtol=1e-6)
    assert all(app.infers >= 5 for _, app in servers), [app.infers for _, app in servers]


def test_no_healthy_endpoint_is_a_503(mlp: Model) -> None:
    urls = [f"http://127.0.0.1:{serving.free_port()}" for _ in range(2)]
    transport = BalancingTransport(urls, ejection_time=60)
    with server_on(Counting(create_app({"mlp": mlp})), int(urls[0].rsplit(":", 1)[1])):
        remote = Model.load(f"{urls[0]}/v2/models/mlp", options={"transport": transport, "retries": 0})
    with pytest.raises(RemoteError, match="no healthy endpoint") as info:
        remote.predict(models.dataset(2)[0])
    assert info.value.status_code == 503


def test_policy_unit() -> None:
    now = [0.0]
    health = {"http://a": True, "http://b": False}
    b = Balancer(
        ["http://a", "http://b/"], max_failures=2, ejection_time=1.0, probe=health.__getitem__, clock=lambda: now[0]
    )
    first, second = b.acquire(), b.acquire()
    assert first is not None and second is not None and {first, second} == {"http://a", "http://b"}
    b.release(first, ok=True)
    assert b.acquire() == first  # fewest outstanding wins
    b.release(first, ok=True)
    b.release(second, ok=False)  # one failure: still in (max_failures=2)
    assert b.healthy() == ["http://a", "http://b"]
    assert b.acquire(exclude=["http://a"]) == "http://b"
    b.release("http://b", ok=False)  # two failures in a row: ejected
    assert b.healthy() == ["http://a"]
    assert b.snapshot()["http://b"] == {"outstanding": 0, "sent": 2, "failures": 2, "ejected": True}
    assert b.acquire(exclude=["http://a"]) is None
    b.check()  # unhealthy probe: stays out, the next probe waits twice as long
    assert b.healthy() == ["http://a"]
    health["http://b"] = True
    now[0] = 1.5  # not yet due (ejected at 0: +1 s, then +2 s after the failed probe)
    b.release(b.acquire() or "", ok=True)
    time.sleep(0.05)
    assert b.healthy() == ["http://a"]
    now[0] = 3.5  # due: the next acquire starts a background probe, which re-admits it
    b.release(b.acquire() or "", ok=True)
    deadline = time.monotonic() + 5
    while b.healthy() != ["http://a", "http://b"]:
        assert time.monotonic() < deadline, "not re-admitted"
        time.sleep(0.01)
    with pytest.raises(ValueError):
        Balancer([])
