"""The remote backend on both wires (HTTP, gRPC) behaves as one: devices, saved-package rules, async timing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model
from aimass.backends.remote import RemoteBackend, mount, unmount
from aimass.device import cuda_device_count
from aimass.errors import DeviceError, IntegrityError, RemoteError, UnsupportedOperation
from aimass.server import create_app

pytest.importorskip("grpc")
from aimass.backends.remote_grpc import GrpcRemoteBackend
from aimass.server.grpc import BackgroundServer

BASE = "http://remote-wires.test"
TOKEN = "remote-wires-token-0123456789"
WIRES = ("http", "grpc")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("wires") / "mlp.onnx"))


@pytest.fixture(scope="module")
def urls(mlp: Model) -> Iterator[dict[str, str]]:
    """The same model served over HTTP (in process) and gRPC (a local port)."""
    app = create_app({"mlp": mlp}, auth_token=TOKEN)
    mount(BASE, app)
    grpc_server = BackgroundServer(app)
    yield {"http": f"{BASE}/v2/models/mlp", "grpc": f"grpc://{grpc_server.target}/mlp"}
    grpc_server.stop()
    unmount(BASE)


def _load(url: str, **kwargs: Any) -> Model:
    return Model.load(url, options={"auth_token": TOKEN}, **kwargs)


@pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is visible: nothing to tell apart")
def test_the_device_is_the_servers_on_both_wires(urls: dict[str, str], mlp: Model) -> None:
    # A local model on "cuda" without a GPU is a DeviceError; a remote one never looks for a local GPU.
    with pytest.raises(DeviceError):
        mlp.to("cuda")
    x = np.ones((2, 4), np.float32)
    for wire in WIRES:
        model = _load(urls[wire])
        assert model.backend.owns_device
        with pytest.raises(UnsupportedOperation, match=r"choose the device on the server, not with to\('cuda'\)"):
            model.to("cuda")
        on_cuda = _load(urls[wire], device="cuda")  # the server chose its device; the client records the ask
        assert on_cuda.device == "cuda"
        np.testing.assert_array_equal(on_cuda.predict(x)["y"], mlp.predict(x)["y"])


def _package(tmp: Path, artifact: str, document: dict[str, Any]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / artifact
    path.write_text(json.dumps(document))
    return path


BACKENDS: dict[str, tuple[type[RemoteBackend], str, str]] = {
    # Loopback, nothing listening: a package that got past the rules would fail to connect, not resolve a name.
    "http": (RemoteBackend, "remote.json", "http://127.0.0.1:9/v2/models/m"),
    "grpc": (GrpcRemoteBackend, "remote_grpc.json", "grpc://127.0.0.1:9/m"),
}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {"options": {"headers": {"authorization": "Bearer x"}}},
            r"option 'headers' is not allowed in a package \(only the options [a-z_, ]+; "
            r"credentials, headers and [a-z]+ come from the caller\)",
        ),
        ({"options": {"auth_token": "chosen"}}, r"option 'auth_token' is not allowed in a package \(only the options"),
        ({"options": {"timeout": "soon"}}, r"option 'timeout' must be a non-negative number"),
        ({"options": {"timeout": -1}}, r"option 'timeout' must be a non-negative number"),
        ({"options": ["timeout"]}, r"'options' must be an object"),
        ({"token": "x"}, r"unexpected key 'token' \(only 'url' and 'options'\)"),
    ],
    ids=["headers", "auth-token", "timeout-text", "timeout-negative", "options-list", "extra-key"],
)
def test_both_wires_refuse_bad_packages_alike(tmp_path: Path, document: dict[str, Any], problem: str) -> None:
    for wire, (backend, artifact, url) in BACKENDS.items():
        path = _package(tmp_path / wire, artifact, {"url": url, **document})
        with pytest.raises(IntegrityError) as info:
            backend.load(path)
        # One text for both files: where, then what is wrong, nothing about the wire in between.
        assert re.fullmatch(rf"remote package file .*{re.escape(artifact)}: {problem}.*", str(info.value)), (
            wire,
            str(info.value),
        )


@pytest.mark.parametrize("wire", WIRES)
def test_package_urls_must_be_plain_model_urls(tmp_path: Path, wire: str) -> None:
    backend, artifact, url = BACKENDS[wire]
    scheme, rest = url.split("://", 1)
    for bad in (f"{scheme}://user:pw@{rest}", "file:///etc/passwd", f"{scheme}://127.0.0.1:9"):
        path = _package(tmp_path, artifact, {"url": bad})
        with pytest.raises(IntegrityError, match=rf"remote package file .*{re.escape(artifact)}: "):
            backend.load(path)


def test_apredict_is_timed_by_the_monitor_on_both_wires(urls: dict[str, str], mlp: Model) -> None:
    x = np.ones((3, 4), np.float32)

    async def twice(model: Model) -> list[dict[str, np.ndarray]]:
        return [await model.apredict(x), await model.apredict(x)]

    for wire in WIRES:
        model = _load(urls[wire])
        monitor = model.monitor
        for out in asyncio.run(twice(model)):
            np.testing.assert_array_equal(out["y"], mlp.predict(x)["y"])
        model.predict(x)
        report = monitor.report()
        assert (report.requests, report.errors, report.rows_seen) == (3, 0, 9), wire


def test_config_and_bundles_treat_grpc_urls_as_model_servers(urls: dict[str, str]) -> None:
    from aimass.config import ModelConfig
    from aimass.scale.bundle import bundle

    for wire in WIRES:
        # The configured token goes to a gRPC server as to an HTTP one: without it the server says 401.
        assert ModelConfig(uri=urls[wire], auth_token=TOKEN, timeout=4).load("mlp").name == "mlp"
        with pytest.raises(RemoteError) as info:
            ModelConfig(uri=urls[wire], timeout=4).load("mlp")
        assert info.value.status_code == 401
        assert bundle(urls[wire]) == urls[wire]  # Ray workers open the URL themselves
    assert not ModelConfig(uri="models/fraud.onnx").is_remote


def test_a_broken_grpc_answer_is_a_remote_error(urls: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A server's answer that does not decode is the server's fault (502), not the caller's bad input
    # (SchemaError, 400), and what it sent stays out of the message, as on the HTTP wire.
    from aimass.errors import SchemaError
    from aimass.protocol.grpc import codec

    model = _load(urls["grpc"])

    def broken(response: Any) -> Any:
        raise SchemaError("output 'y': expected FP32, got 'DB_PASSWORD=hunter2'")

    monkeypatch.setattr(codec, "decode_infer_response", broken)
    with pytest.raises(RemoteError) as info:
        model.predict(np.zeros((2, 4), np.float32))
    assert info.value.status_code == 502 and "hunter2" not in str(info.value)
