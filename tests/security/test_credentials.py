"""Credentials go only where the user sends them (issue 13, finding 3).

A remote package (``remote.json``) chooses its URL; it must not choose credentials. A capture
server (an in-process ASGI app that records every request's headers and answers V2 metadata)
stands in for an attacker's host and for the user's own server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import pytest
import typer

from aimass import Model, RemoteError, Schema, TensorSpec, __version__
from aimass.backends.remote import mount, unmount
from aimass.errors import IntegrityError
from aimass.package import write_package
from aimass.server import create_app

ATTACKER = "http://attacker.test"
MASS = "http://mass.test:8000"
ELSEWHERE = "http://elsewhere.test"
CLIENT, SERVER, LEGACY = "client-secret", "server-secret", "legacy-secret"
SCHEMA = Schema(
    inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, 2])],
)
METADATA = {
    "name": "m",
    "versions": ["1"],
    "platform": "capture",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


class Capture:
    """An ASGI app that records (method, path, headers) of every request and answers V2 metadata."""

    def __init__(self, redirect: str | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.redirect = redirect

    @property
    def authorizations(self) -> list[str | None]:
        return [headers.get("authorization") for _, _, headers in self.requests]

    def leaked(self, *secrets: str) -> list[str]:
        """Header values of any captured request that contain one of ``secrets``."""
        return [v for _, _, h in self.requests for v in h.values() if any(s in v for s in secrets)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        self.requests.append((scope["method"], path, headers))
        extra: list[tuple[bytes, bytes]] = []
        body: dict[str, Any]
        if self.redirect is not None:
            status, body = 307, {}
            extra = [(b"location", f"{self.redirect}{path}".encode())]
        elif path == "/v2":
            status, body = 200, {"name": "capture", "version": "1", "extensions": []}
        elif path in ("/v2/models/m", "/v2/models/m/versions/1"):
            status, body = 200, METADATA
        else:
            status, body = 404, {"error": f"unknown path {path}"}
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every token the process might hold is set; the host list starts empty."""
    monkeypatch.delenv("AIMASS_CLIENT_TOKEN_HOSTS", raising=False)
    monkeypatch.setenv("AIMASS_CLIENT_TOKEN", CLIENT)
    monkeypatch.setenv("AIMASS_SERVER_TOKEN", SERVER)
    monkeypatch.setenv("AIMASS_AUTH_TOKEN", LEGACY)
    return monkeypatch


@pytest.fixture
def servers() -> Iterator[dict[str, Capture]]:
    captures = {ATTACKER: Capture(), MASS: Capture(), ELSEWHERE: Capture()}
    for base, app in captures.items():
        mount(base, app)
    yield captures
    for base in captures:
        unmount(base)


def remote_package(directory: Path, url: str, options: dict[str, Any] | None = None) -> Path:
    """A package as an attacker would ship it: a consistent manifest over a hand-written remote.json."""

    def artifacts(tmp: Path) -> list[str]:
        (tmp / "remote.json").write_text(json.dumps({"url": url, "options": options or {}}), encoding="utf-8")
        return ["remote.json"]

    fields = {
        "name": "m",
        "backend": "remote",
        "framework": "httpx",
        "aimass_version": __version__,
        "model_schema": SCHEMA,
    }
    return write_package(directory, artifacts, fields)


def test_package_pointing_elsewhere_gets_no_token(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture]
) -> None:
    pkg = remote_package(tmp_path / "pkg", f"{ATTACKER}/v2/models/m")
    model = Model.load(pkg)
    assert model.backend_name == "remote"
    capture = servers[ATTACKER]
    assert capture.requests, "the package's server was contacted"
    assert capture.authorizations == [None] * len(capture.requests)
    assert capture.leaked(CLIENT, SERVER, LEGACY) == []


@pytest.mark.parametrize(
    "options",
    [
        {"headers": {"Authorization": f"Bearer {LEGACY}"}},
        {"headers": {"X-Api-Key": "whatever"}},
        {"auth_token": "attacker-chosen"},
        {"endpoints": [ELSEWHERE]},
        {"binary_output": True},
        {"timeout": 1, "retries": "3; headers"},
    ],
    ids=["authorization-header", "other-header", "auth-token", "endpoints", "unknown-key", "bad-value"],
)
def test_package_cannot_carry_credentials(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture], options: dict[str, Any]
) -> None:
    pkg = remote_package(tmp_path / "pkg", f"{ATTACKER}/v2/models/m", options)
    key = next(k for k in options if k != "timeout")
    with pytest.raises(IntegrityError, match=rf"remote\.json.*'{key}'"):
        Model.load(pkg)
    assert all(not capture.requests for capture in servers.values())


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://attacker.test/v2/models/m",
        "http://attacker.test/not-v2/m",
        "http://user:pass@attacker.test/v2/models/m",
        f"http://{MASS.removeprefix('http://')}@attacker.test/v2/models/m",
    ],
)
def test_package_url_must_be_a_plain_v2_url(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture], url: str
) -> None:
    env.setenv("AIMASS_CLIENT_TOKEN_HOSTS", "mass.test:8000")
    pkg = remote_package(tmp_path / "pkg", url)
    with pytest.raises(IntegrityError, match=r"remote\.json"):
        Model.load(pkg)
    assert all(not capture.requests for capture in servers.values())


def test_loading_a_remote_package_says_so(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture], caplog: pytest.LogCaptureFixture
) -> None:
    pkg = remote_package(tmp_path / "pkg", f"{ATTACKER}/v2/models/m")
    with caplog.at_level(logging.WARNING, logger="aimass"):
        Model.load(pkg)
    [record] = [r for r in caplog.records if "points at remote server" in r.getMessage()]
    message = record.getMessage()
    assert record.name == "aimass" and record.levelno == logging.WARNING
    assert str(pkg) in message and f"{ATTACKER}/v2/models/m" in message
    assert "not sending AIMASS_CLIENT_TOKEN" in message and CLIENT not in message


def test_the_client_never_sends_the_server_token(env: pytest.MonkeyPatch, servers: dict[str, Capture]) -> None:
    env.delenv("AIMASS_CLIENT_TOKEN")
    Model.load(f"{ATTACKER}/v2/models/m")
    assert servers[ATTACKER].requests and servers[ATTACKER].leaked(SERVER, LEGACY) == []


def test_the_server_reads_only_its_own_token(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    # The env token the client sends is not the server's, and the client never reads the server's.
    app = create_app({"m": models.onnx_mlp(tmp_path / "m.onnx")})
    mount("http://served.test", app)
    try:
        url = "http://served.test/v2/models/m"
        for wrong in ({}, {"auth_token": LEGACY}, {"auth_token": CLIENT}):
            with pytest.raises(RemoteError, match="HTTP 401"):
                Model.load(url, options=wrong)
        assert Model.load(url, options={"auth_token": SERVER}).name == "m"
    finally:
        unmount("http://served.test")


def test_the_cli_refuses_to_start_open_on_the_retired_variable(env: pytest.MonkeyPatch) -> None:
    from aimass.cli.options import server_token

    with pytest.raises(typer.BadParameter, match="AIMASS_SERVER_TOKEN"):
        server_token("")
    assert server_token(SERVER) == SERVER
    env.delenv("AIMASS_AUTH_TOKEN")
    assert server_token("") == ""


def test_a_url_the_user_gives_gets_the_client_token(env: pytest.MonkeyPatch, servers: dict[str, Capture]) -> None:
    Model.load(f"{MASS}/v2/models/m")
    capture = servers[MASS]
    assert capture.requests and capture.authorizations == [f"Bearer {CLIENT}"] * len(capture.requests)
    assert capture.leaked(SERVER, LEGACY) == []


def test_token_hosts_let_a_package_url_have_the_client_token(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture]
) -> None:
    pkg = remote_package(tmp_path / "pkg", f"{MASS}/v2/models/m")
    # Neither another host, a lookalike, nor the host on its default port is the package's host:port.
    for listed in ("attacker.test", "mass.test", "mass.test.attacker.test:8000", "mass.test:80"):
        env.setenv("AIMASS_CLIENT_TOKEN_HOSTS", listed)
        Model.load(pkg)
        assert set(servers[MASS].authorizations) == {None}, listed
    servers[MASS].requests.clear()
    env.setenv("AIMASS_CLIENT_TOKEN_HOSTS", " other.test , MASS.test:8000 ")
    Model.load(pkg)
    assert servers[MASS].authorizations == [f"Bearer {CLIENT}"] * len(servers[MASS].requests)
    # ... and the list opens only the hosts it names.
    attacker_pkg = remote_package(tmp_path / "attacker", f"{ATTACKER}/v2/models/m")
    Model.load(attacker_pkg)
    assert servers[ATTACKER].requests and set(servers[ATTACKER].authorizations) == {None}


def test_explicit_auth_token_opts_in_and_caller_options_win(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture]
) -> None:
    pkg = remote_package(tmp_path / "pkg", f"{MASS}/v2/models/m", {"timeout": 3, "retries": 1})
    model = Model.load(pkg, options={"auth_token": "chosen", "timeout": 1.5, "headers": {"x-team": "fraud"}})
    capture = servers[MASS]
    assert capture.authorizations == ["Bearer chosen"] * len(capture.requests)
    assert all(h.get("x-team") == "fraud" for _, _, h in capture.requests)
    backend: Any = model.backend
    assert backend._timeout.read == 1.5 and backend._retries == 1


def test_saved_remote_package_round_trips_without_credentials(
    tmp_path: Path, env: pytest.MonkeyPatch, servers: dict[str, Capture]
) -> None:
    direct = Model.load(f"{MASS}/v2/models/m", options={"timeout": 2, "headers": {"x-team": "fraud"}})
    pkg = direct.save(tmp_path / "pkg")
    saved = json.loads((pkg / "remote.json").read_text(encoding="utf-8"))
    assert saved == {"url": f"{MASS}/v2/models/m", "options": {"timeout": 2}}
    servers[MASS].requests.clear()
    Model.load(pkg)
    assert servers[MASS].requests and set(servers[MASS].authorizations) == {None}


def test_redirects_are_not_followed(env: pytest.MonkeyPatch, servers: dict[str, Capture]) -> None:
    redirecting = Capture(redirect=ELSEWHERE)
    mount("http://redirect.test", redirecting)
    try:
        with pytest.raises(RemoteError, match="redirect to http://elsewhere.test/v2.* not followed"):
            Model.load("http://redirect.test/v2/models/m")
    finally:
        unmount("http://redirect.test")
    assert redirecting.requests and not servers[ELSEWHERE].requests
