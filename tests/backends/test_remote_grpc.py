"""The gRPC remote backend beyond the conformance suite: typed errors, tokens, URLs and saved packages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.errors import IntegrityError, ModelLoadError, ModelNotFound, RemoteError, SchemaError
from aimass.server import create_app

pytest.importorskip("grpc")
from aimass.server.grpc import BackgroundServer

TOKEN = "remote-grpc-token-0123456789"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("rg") / "mlp.onnx"))


@pytest.fixture(scope="module")
def server(mlp: Model) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(create_app({"mlp": mlp}, auth_token=TOKEN))
    yield srv
    srv.stop()


def test_urls_versions_and_typed_errors(server: BackgroundServer, mlp: Model) -> None:
    x = np.ones((2, 4), np.float32)
    for url in (f"grpc://{server.target}/mlp", f"grpc://{server.target}/v2/models/mlp/versions/1"):
        m = Model.load(url, options={"auth_token": TOKEN})
        assert m.name == "mlp" and m.backend_name == "grpc" and m.schema == mlp.schema
        np.testing.assert_array_equal(m.predict(x)["y"], mlp.predict(x)["y"])
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        Model.load(f"grpc://{server.target}/nope", options={"auth_token": TOKEN})
    with pytest.raises(ModelNotFound, match="has no version '9'"):
        Model.load(f"grpc://{server.target}/mlp/versions/9", options={"auth_token": TOKEN})
    with pytest.raises(RemoteError, match="UNAUTHENTICATED") as info:
        Model.load(f"grpc://{server.target}/mlp", options={"auth_token": None})
    assert info.value.status_code == 401
    with pytest.raises(ModelLoadError, match="not a gRPC model URL"):
        Model.load(f"grpc://{server.target}/", options={"auth_token": TOKEN})


def test_server_side_schema_errors_come_back_typed(server: BackgroundServer) -> None:
    # A schema that lies about the shape gets past local validation: the server refuses it.
    from aimass.schema import Schema

    lie = Schema.model_validate(
        {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 5]}], "outputs": [{"name": "y", "dtype": "FP32"}]}
    )
    m = Model.load(f"grpc://{server.target}/mlp", options={"auth_token": TOKEN}, schema=lie)
    with pytest.raises(SchemaError, match=r"input 'x': expected FP32 shape \[-1, 4\]") as info:
        m.predict(np.ones((1, 5), np.float32))
    assert info.value.tensor == "x"


def test_unreachable_server_is_a_503(tmp_path: Path) -> None:
    import serving

    with pytest.raises(RemoteError, match="UNAVAILABLE") as info:
        Model.load(f"grpc://127.0.0.1:{serving.free_port()}/mlp", options={"timeout": 5})
    assert info.value.status_code == 503


def test_saved_package_carries_no_credentials(
    server: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = Model.load(f"grpc://{server.target}/mlp", options={"auth_token": TOKEN, "timeout": 7, "headers": {"a": "b"}})
    path = m.save(tmp_path / "pkg")
    saved = json.loads((path / "remote_grpc.json").read_text())
    assert saved == {"url": f"grpc://{server.target}/mlp", "options": {"timeout": 7}}
    monkeypatch.setenv("AIMASS_CLIENT_TOKEN", TOKEN)
    monkeypatch.delenv("AIMASS_CLIENT_TOKEN_HOSTS", raising=False)
    with pytest.raises(RemoteError, match="UNAUTHENTICATED"):  # the env token does not go to a package's host
        Model.load(path)
    monkeypatch.setenv("AIMASS_CLIENT_TOKEN_HOSTS", server.target)
    assert Model.load(path).predict(np.ones((1, 4), np.float32))["y"].shape == (1, 3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"url": saved["url"], "options": {"headers": {"authorization": "x"}}}))
    from aimass.backends.remote_grpc import GrpcRemoteBackend

    with pytest.raises(IntegrityError, match="only the options timeout, raw"):
        GrpcRemoteBackend.load(bad)
    for options, problem in (({"timeout": "soon"}, "'timeout' must be"), ({"raw": 1}, "'raw' must be")):
        bad.write_text(json.dumps({"url": saved["url"], "options": options}))
        with pytest.raises(IntegrityError, match=problem):
            GrpcRemoteBackend.load(bad)
    bad.write_bytes(b'{"url": "grpc://\xff"}')
    with pytest.raises(IntegrityError, match=r"bad.json is not UTF-8 text \(byte 0xff"):
        GrpcRemoteBackend.load(bad)
