"""aimass models on Ray Serve: same V2 API and errors as ``aimass serve``, scaling 1 -> 2 -> 1
replicas under load without losing or corrupting a request, and Ray Serve autoscaling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import models
import numpy as np
import pytest

from aimass import Model, ModelNotFound, SchemaError
from aimass.scale import Service, deploy

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def service(ray_cluster: Any, serve_port: int, mlp: Model, scale_tmp: Any) -> Iterator[Service]:
    two = models.onnx_two_inputs(scale_tmp / "two.onnx")
    svc = deploy(
        {"mlp": mlp, "two": str(two)},
        num_replicas=1,
        num_cpus=0.5,
        port=serve_port,
        max_queue_delay="500us",
        model_options={"session_options": {"intra_op_num_threads": 1}},
        max_body_size="1MiB",
    )
    yield svc
    svc.shutdown()


class Load:
    """Client threads sending distinct rows and checking every answer against the local model."""

    def __init__(self, url: str, local: Model, threads: int = 4) -> None:
        self.url, self.local = url, local
        self.sent = self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        remote = Model.load(f"{self.url}/v2/models/mlp", options={"retries": 0, "timeout": 30})
        while not self.stop.is_set():
            x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
            with self.lock:
                self.sent += 1
            try:
                got = remote.predict(x)["y"]
            except Exception as e:  # every failure is recorded: none may happen
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                continue
            want = self.local.predict(x)["y"]
            with self.lock:
                if np.allclose(got, want, rtol=1e-5, atol=1e-5):
                    self.ok += 1
                else:
                    self.failures.append(f"wrong answer for {x.tolist()}")


def test_same_v2_api_and_errors(service: Service, mlp: Model) -> None:
    remote = Model.load(f"{service.url}/v2/models/mlp")
    assert remote.schema == mlp.schema
    x = models.dataset(64)[0]
    np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-5, atol=1e-5)

    two = Model.load(f"{service.url}/v2/models/two")
    out = two.predict({"x": x[:3], "scale": np.array([[1], [2], [3]], np.int64)})["y"]
    np.testing.assert_allclose(out, x[:3] * np.array([[1], [2], [3]], np.float32))

    bad = httpx.post(
        f"{service.url}/v2/models/mlp/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
    )
    assert bad.status_code == 400
    assert bad.json() == {"error": "input 'x': expected FP32 shape [-1, 4], got float32 shape [1, 3]", "tensor": "x"}
    with pytest.raises(SchemaError, match="input 'x'") as info:
        remote.predict(np.zeros((2, 5), np.float32))
    assert info.value.tensor == "x"
    too_big = httpx.post(f"{service.url}/v2/models/mlp/infer", content=b" " * (2 << 20))
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    assert httpx.get(f"{service.url}/v2/models/nope").status_code == 404
    with pytest.raises(ModelNotFound):
        Model.load(f"{service.url}/v2/models/nope")
    assert httpx.get(f"{service.url}/v2/health/ready").status_code == 200
    assert "aimass" in httpx.get(f"{service.url}/metrics").text


def test_scale_up_and_down_under_load_loses_nothing(service: Service, mlp: Model) -> None:
    assert service.replicas() == 1
    with Load(service.url, mlp) as load:
        time.sleep(1.0)
        service.scale(2)
        service.wait_replicas(2)
        before = load.ok
        time.sleep(2.0)
        assert load.ok > before, "no answers while running on 2 replicas"
        service.scale(1)
        service.wait_replicas(1)
        before = load.ok
        time.sleep(1.0)
        assert load.ok > before, "no answers after scaling back to 1 replica"
    assert load.failures == []
    assert load.ok == load.sent > 50


# Short windows so the test takes seconds; Ray warns that look_back_period_s is below its 10 s metrics push.
@pytest.mark.filterwarnings("ignore:`look_back_period_s`:FutureWarning")
def test_autoscaling_follows_load(ray_cluster: Any, serve_port: int, mlp: Model) -> None:
    svc = deploy(
        {"mlp": mlp},
        name="aimass-auto",
        route_prefix="/auto",
        num_cpus=0.5,
        port=serve_port,
        autoscaling={
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "look_back_period_s": 1.0,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": 1.0,
        },
    )
    try:
        svc.wait_replicas(1)
        with Load(svc.url, mlp, threads=6) as load:
            svc.wait_replicas(2, timeout=60)
        svc.wait_replicas(1, timeout=60)
        assert load.failures == []
        assert load.ok == load.sent > 0
    finally:
        svc.shutdown()
