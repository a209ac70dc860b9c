"""The remote backend beyond the conformance suite: typed server errors, retries on connect errors
only, timeouts, auth, binary vs JSON choice, async predict, and a real socket against ``aimass serve``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest
import serving

from aimass import Model, ModelNotFound, RemoteError, Schema, SchemaError, TensorSpec
from aimass.backends.remote import InProcessTransport, mount, unmount
from aimass.errors import ModelLoadError, UnsupportedOperation
from aimass.server import create_app

BASE = "http://remote-tests.test"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    tmp = tmp_path_factory.mktemp("remote")
    return {
        "mlp": Model.load(models.onnx_mlp(tmp / "mlp.onnx")),
        "fails": Model.load(serving.onnx_reshape_fails(tmp / "fails.onnx")),
    }


@pytest.fixture(scope="module")
def app(local: dict[str, Model]) -> Iterator[Any]:
    application = create_app(local, auth_token="tok")
    mount(BASE, application)
    yield application
    unmount(BASE)


class Recording:
    """A transport that records requests and can fail the first ``fail`` of them with ``error``."""

    def __init__(self, inner: Any, fail: int = 0, error: type[Exception] = httpx.ConnectError) -> None:
        self.inner, self.fail, self.error = inner, fail, error
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.fail:
            raise self.error("injected", request=request)
        response: httpx.Response = self.inner.handle_request(request)
        return response

    def close(self) -> None:
        pass


def _x(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def test_remote_equals_local_and_reads_the_schema(app: Any, local: dict[str, Model]) -> None:
    remote = Model.load(f"{BASE}/v2/models/mlp/versions/1", options={"auth_token": "tok"})
    assert remote.backend_name == "remote" and remote.schema == local["mlp"].schema and remote.name == "mlp"
    np.testing.assert_array_equal(remote.predict(_x())["y"], local["mlp"].predict(_x())["y"])


def test_server_400_is_schema_error_with_the_servers_message(app: Any, local: dict[str, Model]) -> None:
    # A wrong schema on the client lets a bad tensor through, so the server's answer is what we see.
    wrong = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 5])], outputs=[])
    remote = Model.load(f"{BASE}/v2/models/mlp", schema=wrong, options={"auth_token": "tok"})
    bad = np.zeros((2, 5), np.float32)
    with pytest.raises(SchemaError) as info:
        remote.predict(bad)
    with pytest.raises(SchemaError) as expected:
        local["mlp"].predict(bad)
    assert str(info.value) == str(expected.value) and info.value.tensor == "x"


def test_server_404_and_500_and_401(app: Any, local: dict[str, Model]) -> None:
    with pytest.raises(ModelNotFound, match="unknown model 'ghost'"):
        Model.load(f"{BASE}/v2/models/ghost", options={"auth_token": "tok"})
    with pytest.raises(ModelNotFound, match="has no version '3'"):
        Model.load(f"{BASE}/v2/models/mlp/versions/3", options={"auth_token": "tok"})
    fails = Model.load(f"{BASE}/v2/models/fails", options={"auth_token": "tok"})
    with pytest.raises(RemoteError, match="HTTP 500 from remote server remote-tests.test:80") as info:
        fails.predict(np.ones((1, 4), np.float32))
    # The remote's answer is not in the message (a server relays it to its clients), only in detail.
    assert info.value.status_code == 500 and "onnxruntime failed" not in str(info.value)
    assert info.value.detail.startswith('{"error":"onnxruntime failed') and len(info.value.detail) <= 200
    with pytest.raises(RemoteError, match="HTTP 401") as info:
        Model.load(f"{BASE}/v2/models/mlp", options={"auth_token": "wrong"})
    assert info.value.status_code == 401


def test_unloaded_model_answers_model_not_found(local: dict[str, Model]) -> None:
    application = create_app(local)
    transport = InProcessTransport(application)
    remote = Model.load("http://unload.test/v2/models/mlp", options={"transport": transport})
    application.repository.unload("mlp")
    with pytest.raises(ModelNotFound, match="not loaded"):
        remote.predict(_x())
    transport.shutdown()


def test_retries_connect_errors_then_succeeds(app: Any, local: dict[str, Model]) -> None:
    rec = Recording(InProcessTransport(app), fail=2)
    remote = Model.load(f"{BASE}/v2/models/mlp", options={"transport": rec, "auth_token": "tok", "retries": 2})
    assert len(rec.requests) == 4  # GET /v2 failed twice, then /v2 and the metadata
    np.testing.assert_array_equal(remote.predict(_x())["y"], local["mlp"].predict(_x())["y"])


def test_gives_up_after_retries_and_never_retries_timeouts(app: Any) -> None:
    rec = Recording(InProcessTransport(app), fail=10)
    with pytest.raises(RemoteError, match="cannot reach") as info:
        Model.load(f"{BASE}/v2/models/mlp", options={"transport": rec, "retries": 2})
    assert info.value.status_code == 503 and len(rec.requests) == 3
    slow = Recording(InProcessTransport(app), fail=10, error=httpx.ReadTimeout)
    with pytest.raises(RemoteError, match="no answer within the timeout") as info:
        Model.load(f"{BASE}/v2/models/mlp", options={"transport": slow, "retries": 5})
    assert info.value.status_code == 504 and len(slow.requests) == 1


def test_nothing_listening_is_a_remote_error() -> None:
    port = serving.free_port()
    with pytest.raises(RemoteError, match="cannot reach"):
        Model.load(f"http://127.0.0.1:{port}/v2/models/m", options={"retries": 1, "connect_timeout": 0.5})


@pytest.mark.parametrize(("threshold", "binary"), [(None, False), (0, True), (1 << 20, False), (16, True)])
def test_binary_above_threshold(app: Any, local: dict[str, Model], threshold: int | None, binary: bool) -> None:
    rec = Recording(InProcessTransport(app))
    remote = Model.load(
        f"{BASE}/v2/models/mlp", options={"transport": rec, "auth_token": "tok", "binary_threshold": threshold}
    )
    out = remote.predict(_x(8))
    np.testing.assert_array_equal(out["y"], local["mlp"].predict(_x(8))["y"])
    sent = rec.requests[-1]
    assert ("inference-header-content-length" in sent.headers) == binary


def test_apredict_uses_the_async_client(app: Any, local: dict[str, Model]) -> None:
    remote = Model.load(f"{BASE}/v2/models/mlp", options={"auth_token": "tok"})

    async def many() -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(*(remote.apredict(_x(2, s)) for s in range(20))))

    for s, out in enumerate(asyncio.run(many())):
        np.testing.assert_array_equal(out["y"], local["mlp"].predict(_x(2, s))["y"])
    assert remote.backend._aclients  # type: ignore[attr-defined]


def test_bad_urls_and_devices(app: Any) -> None:
    with pytest.raises(ModelLoadError, match="not a V2 model URL"):
        Model.load("http://host:8000/models/x")
    remote = Model.load(f"{BASE}/v2/models/mlp", options={"auth_token": "tok"})
    with pytest.raises(UnsupportedOperation, match="choose the device on the server"):
        remote.backend.to("cuda")


@pytest.mark.slow
def test_real_socket_against_aimass_serve(tmp_path: Path, local: dict[str, Model]) -> None:
    local["mlp"].save(tmp_path / "repo" / "mlp" / "1")
    port = serving.free_port()
    cmd = [str(Path(sys.executable).parent / "aimass"), "serve", str(tmp_path / "repo"), "--port", str(port)]
    env = {**{k: v for k, v in os.environ.items() if k != "AIMASS_AUTH_TOKEN"}, "AIMASS_SERVER_TOKEN": "sock"}
    proc = subprocess.Popen(
        [*cmd, "--max-queue-delay", "1ms"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        serving.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process=proc)
        url = f"http://127.0.0.1:{port}/v2/models/mlp"
        for threshold in (None, 0):
            remote = Model.load(url, options={"auth_token": "sock", "binary_threshold": threshold})
            np.testing.assert_array_equal(remote.predict(_x(5))["y"], local["mlp"].predict(_x(5))["y"])
        with pytest.raises(SchemaError, match=r"input 'x': expected FP32 shape \[-1, 4\]"):
            remote.predict(np.zeros((1, 3), np.float32))
        with pytest.raises(RemoteError, match="401"):
            Model.load(url, options={"auth_token": None})
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert b"aimass serving ['mlp']" in out, out
