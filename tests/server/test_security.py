"""Hostile clients: bearer tokens compared in constant time and never echoed, no server paths in any
answer, model names that try to leave the repository, symlinks out of it, pickle refused by default.

Package and store traversal/symlink cases already live beside their code (tests/test_package.py:
artifact names with ``..``/absolute paths, symlinked artifacts; tests/test_store.py: bad names and
references); this file covers the server's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.errors import ModelLoadError
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server import http as http_module

TOKEN = "tok-9f8e7d6c5b4a"


def _client(app: object, token: str | None = TOKEN) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(transport=InProcessTransport(app), base_url="http://t", headers=headers)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx"))


def _broken_package(model: Model, path: Path) -> Path:
    """A package whose checksums match but whose model file is not a model: loading fails in the backend."""
    p = model.save(path)
    garbage = b"not an onnx model " * 4
    (p / "model.onnx").write_bytes(garbage)
    manifest = json.loads((p / "aimass.json").read_text())
    for a in manifest["artifacts"]:
        if a["path"] == "model.onnx":
            a["sha256"], a["size"] = hashlib.sha256(garbage).hexdigest(), len(garbage)
    (p / "aimass.json").write_text(json.dumps(manifest))
    return p


async def _get(app: object, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:  # type: ignore[arg-type]
        return await c.get(path, headers=headers)


def test_bearer_token_is_compared_with_hmac_compare_digest(mlp: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = http_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(http_module.hmac, "compare_digest", spy)
    app = create_app({"mlp": mlp}, auth_token=TOKEN)
    assert asyncio.run(_get(app, "/v2/models/mlp", {"authorization": "Bearer nope"})).status_code == 401
    assert asyncio.run(_get(app, "/v2/models/mlp", {"authorization": f"Bearer {TOKEN}"})).status_code == 200
    assert calls == [(b"Bearer nope", f"Bearer {TOKEN}".encode()), (f"Bearer {TOKEN}".encode(),) * 2]


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "Bearer",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}0",
        f"bearer {TOKEN}",
        TOKEN,
        f"Basic {TOKEN}",
        "Bearer \u00e9",
    ],
)
def test_wrong_tokens_get_401_without_echo(mlp: Model, sent: str) -> None:
    app = create_app({"mlp": mlp}, auth_token=TOKEN)
    with _client(app, token=None) as c:
        for path in ["/v2", "/v2/models/mlp", "/metrics", "/v2/repository/index"]:
            raw = sent.encode("latin-1")  # httpx sends str headers as ASCII only
            r = c.request("POST" if "repository" in path else "GET", path, headers={b"authorization": raw})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert TOKEN[:8] not in r.text and (TOKEN[:8] not in sent or sent not in r.text)
        assert c.get("/v2/health/ready").status_code == 200  # health never needs the token


def test_no_answer_holds_a_server_path(mlp: Model, tmp_path: Path) -> None:
    repo = tmp_path / "secret-repo"
    mlp.save(repo / "mlp" / "1")
    explicit = tmp_path / "private" / "m.onnx"
    explicit.parent.mkdir()
    models.onnx_mlp(explicit)
    app = create_app({"direct": explicit}, repository=repo, auth_token=TOKEN)
    _broken_package(mlp, repo / "broken" / "1")
    explicit.unlink()  # the explicit model's file disappears: reloading it fails with a file-system error
    answers: list[httpx.Response] = []
    with _client(app) as c:
        for name in ["broken", "direct", "mlp", "nope"]:
            answers.append(c.post(f"/v2/repository/models/{name}/load", json={}))
        answers.append(c.post("/v2/repository/index"))
        answers.append(c.post("/v2/models/mlp/infer", content=b"{bad"))
        answers.append(c.get("/v2/models/direct"))
    statuses = [r.status_code for r in answers]
    assert statuses[0] == 400 and statuses[1] >= 400 and statuses[2] == 200 and statuses[3] == 404, statuses
    for r in answers:
        assert str(tmp_path) not in r.text and "/tmp/" not in r.text, r.text
    index = {(e["name"], e["version"]): e for e in answers[4].json()}
    broken = index[("broken", "1")]
    assert broken["state"] == "UNAVAILABLE" and "ModelLoadError: ONNX model 'model.onnx'" in broken["reason"]


def test_redact_cuts_server_paths_and_keeps_url_paths(mlp: Model, tmp_path: Path) -> None:
    app = create_app({"mlp": mlp}, auth_token=TOKEN)
    msg = f'{{"error":"cannot open {tmp_path}/models/x/model.onnx; no route GET /v2/models/x/y; token {TOKEN}"}}'
    out = app.redact(msg.encode()).decode()
    assert out == '{"error":"cannot open .../model.onnx; no route GET /v2/models/x/y; token <token>"}'


@pytest.mark.parametrize(
    "name", ["..", ".", "...", ".hidden", ".staging-mlp-1", "..%2Fmlp", "%2e%2e", "mlp%00", "~root", "*", "notes"]
)
def test_repository_load_names_cannot_leave_the_root(mlp: Model, tmp_path: Path, name: str) -> None:
    root = tmp_path / "repo"
    mlp.save(root / "mlp" / "1")
    mlp.save(root / ".staging-mlp-1")  # a library's unfinished publish: hidden, never served
    (root / "notes").mkdir()
    mlp.save(tmp_path / "outside")  # a valid package next to the root, reachable as ../outside
    app = create_app(repository=root)
    with _client(app, token=None) as c:
        for action in ("load", "unload"):
            r = c.post(f"/v2/repository/models/{name}/{action}", json={})
            assert r.status_code == 404, r.text
        r = c.post("/v2/repository/models/../outside/load", json={})  # the client normalises ..: never reaches us
        assert r.status_code == 404
        assert [e["name"] for e in c.post("/v2/repository/index").json()] == ["mlp"]


def test_raw_dotdot_paths_reach_no_model(mlp: Model, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    mlp.save(root / "mlp" / "1")
    mlp.save(tmp_path / "outside")
    app = create_app(repository=root)
    sent: list[dict[str, Any]] = []

    async def call(path: str) -> int:
        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        headers = [(b"content-type", b"application/json")]  # a bare POST is refused before any route (CSRF)
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
        await app(scope, receive, send)
        return int(sent[-2]["status"])

    for path in [
        "/v2/repository/models/../outside/load",
        "/v2/repository/models/../../outside/load",
        "/v2/repository/models/..\\outside/load",
        "/v2/models/../outside/infer",
        "/v2/models/mlp/versions/../../outside/infer",
    ]:
        assert asyncio.run(call(path)) in (404, 405), path
    assert [e["name"] for e in app.repository.index()] == ["mlp"]


def test_symlinks_out_of_the_repository_are_not_served(mlp: Model, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    mlp.save(root / "mlp" / "1")
    outside = mlp.save(tmp_path / "elsewhere" / "evil" / "1")
    os.symlink(outside.parent, root / "evil")  # a model directory pointing out of the root
    os.symlink(outside, root / "mlp" / "7")  # a version directory pointing out of the root
    mlp.save(root / "inside" / "1")
    os.symlink(root / "inside" / "1", root / "mlp" / "3")  # a symlink that stays inside is fine
    app = create_app(repository=root)
    assert [(e["name"], e["version"]) for e in app.repository.index()] == [("inside", "1"), ("mlp", "1"), ("mlp", "3")]
    with _client(app, token=None) as c:
        assert c.post("/v2/repository/models/evil/load", json={}).status_code == 404
        body, headers = v2.encode_request({"x": np.ones((1, 4), np.float32)})
        assert c.post("/v2/models/mlp/versions/7/infer", content=body, headers=headers).status_code == 404


def test_body_limit_is_enforced_on_header_and_stream(mlp: Model) -> None:
    app = create_app({"mlp": mlp}, max_body_size=1024)
    with _client(app, token=None) as c:
        r = c.post("/v2/models/mlp/infer", content=b"x" * 1025)
        assert r.status_code == 413 and "limit of 1024 bytes" in r.json()["error"]

        def chunks() -> object:
            for _ in range(64):
                yield b"x" * 100  # no Content-Length: the limit is checked while streaming

        r = c.post("/v2/models/mlp/infer", content=chunks())  # type: ignore[arg-type]
        assert r.status_code == 413


def test_pickle_formats_need_allow_pickle(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = models.torch_mlp()
    path = tmp_path / "full_module.pt"
    torch.save(module, path)  # a whole pickled module, not a state dict: loading it runs pickle
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        Model.load(path)
    x = np.ones((2, 4), np.float32)
    loaded = Model.load(path, options={"allow_pickle": True}, example_input=x)
    np.testing.assert_allclose(
        loaded.predict(x)[loaded.schema.output_names[0]], module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5
    )
