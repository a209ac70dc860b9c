"""Local/remote swap by configuration: env vars, aimass.toml / YAML, and Model.from_config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model, ModelNotFound, RemoteError
from aimass.backends.remote import mount, unmount
from aimass.config import ModelConfig, model_config
from aimass.errors import ModelLoadError
from aimass.server import create_app

BASE = "http://config-tests.test"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = models.onnx_mlp(tmp_path_factory.mktemp("config") / "fraud.onnx")
    mount(BASE, create_app({"fraud": path}))
    yield path
    unmount(BASE)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in (
        "AIMASS_CONFIG",
        "AIMASS_MODEL_URI",
        "AIMASS_FRAUD_URI",
        "AIMASS_FRAUD_DEVICE",
        "AIMASS_FRAUD_AUTH_TOKEN",
        "AIMASS_AUTH_TOKEN",
        "AIMASS_CLIENT_TOKEN",
        "AIMASS_CLIENT_TOKEN_HOSTS",
        "AIMASS_SERVER_TOKEN",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_same_code_local_or_remote_by_config(clean_env: pytest.MonkeyPatch, onnx_file: Path) -> None:
    x = models.dataset(5)[0]
    (Path.cwd() / "aimass.toml").write_text(f'[models.fraud]\nuri = "{onnx_file}"\n', encoding="utf-8")
    local = Model.from_config("fraud")
    assert local.backend_name == "onnx" and local.name == "fraud"
    clean_env.setenv("AIMASS_FRAUD_URI", f"{BASE}/v2/models/fraud")  # env beats the file
    remote = Model.from_config("fraud")
    assert remote.backend_name == "remote" and remote.name == "fraud"
    np.testing.assert_array_equal(remote.predict(x)["y"], local.predict(x)["y"])


def test_yaml_file_with_options(clean_env: pytest.MonkeyPatch, onnx_file: Path) -> None:
    cfg = Path.cwd() / "conf.yaml"
    cfg.write_text(
        f"models:\n  fraud:\n    uri: {BASE}/v2/models/fraud\n    timeout: 2.5\n    options:\n      retries: 1\n",
        encoding="utf-8",
    )
    clean_env.setenv("AIMASS_CONFIG", str(cfg))
    c = model_config("fraud")
    assert c.is_remote and c.timeout == 2.5 and c.options == {"retries": 1}
    assert Model.from_config("fraud").backend._timeout.read == 2.5  # type: ignore[attr-defined]


def test_default_model_uri(clean_env: pytest.MonkeyPatch, onnx_file: Path) -> None:
    clean_env.setenv("AIMASS_MODEL_URI", str(onnx_file))
    assert Model.from_config().backend_name == "onnx"
    assert model_config("anything").uri == str(onnx_file)  # the one-model default applies to any name


def test_configured_url_gets_the_client_token_never_the_server_token(
    clean_env: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    base = "http://config-auth.test"
    mount(base, create_app({"fraud": onnx_file}, auth_token="cfg-tok"))
    try:
        clean_env.setenv("AIMASS_FRAUD_URI", f"{base}/v2/models/fraud")
        clean_env.setenv("AIMASS_SERVER_TOKEN", "cfg-tok")  # the server's setting: a client never sends it
        with pytest.raises(RemoteError, match="HTTP 401"):
            Model.from_config("fraud")
        clean_env.setenv("AIMASS_FRAUD_AUTH_TOKEN", "cfg-tok")  # per-model client token
        assert Model.from_config("fraud").backend_name == "remote"
        clean_env.delenv("AIMASS_FRAUD_AUTH_TOKEN")
        clean_env.setenv("AIMASS_CLIENT_TOKEN", "cfg-tok")  # client-wide token, to the URL configured here
        assert Model.from_config("fraud").backend_name == "remote"
    finally:
        unmount(base)


def test_missing_and_invalid_config(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFound, match="AIMASS_FRAUD_URI, a \\[models.fraud\\] table"):
        model_config("fraud")
    (Path.cwd() / "aimass.toml").write_text('[models.fraud]\nuri = "x.onnx"\ntimeout = -1\n', encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"\[models.fraud\]\): timeout"):
        model_config("fraud")
    (Path.cwd() / "aimass.toml").write_text("[models.fraud\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="not valid TOML"):
        model_config("fraud")


def test_model_config_is_plain_pydantic() -> None:
    assert ModelConfig(uri="m.onnx").model_dump()["device"] == "cpu"
    with pytest.raises(ValueError, match="extra"):
        ModelConfig(uri="m.onnx", colour="red")  # type: ignore[call-arg]
