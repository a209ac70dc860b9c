"""One broken model never stops the server, and what others wrote never reaches a client unredacted.

A repository holds a good model beside three that cannot load: a remote package whose host answers
403 with a secret in the body, a remote package whose host is down, and a package whose backend
raises a bare ``RuntimeError`` naming a server path and a key. The server starts, serves the good
one, and lists the others as UNAVAILABLE with short, redacted reasons; the remote's body reaches no
answer and no log record. The dashboard (``aimass ui``) answers typed JSON errors without server
paths, per model; a malformed ``aliases.json`` takes away only its own model's aliases.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.backends.remote import InProcessTransport, mount, unmount
from aimass.errors import RemoteError, StoreError
from aimass.frameworks.onnx.backend import OnnxBackend
from aimass.package import MANIFEST
from aimass.server import create_app
from aimass.server.dashboard import ui_app
from aimass.store import Store

pytest.importorskip("onnxruntime")

SECRET = "hunter2"
KEY = "sk-live-5a4b3c"  # what the crashing backend's message carries, as a framework's message might
X = np.ones((2, 4), np.float32)


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Every request: 403 with a body holding a secret, as a misconfigured proxy might answer."""

    def _refuse(self) -> None:
        body = f"Forbidden. DB_PASSWORD={SECRET} (see /etc/app/secrets.env)".encode()
        self.send_response(403)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: Any) -> None:  # no stderr noise
        pass


@pytest.fixture(scope="module")
def refusing() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a real HTTP server that answers 403 and a secret to everything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx"))


def _reseal(pkg: Path, rel: str) -> None:
    doc = json.loads((pkg / MANIFEST).read_bytes())
    data = (pkg / rel).read_bytes()
    for art in doc["artifacts"]:
        if art["path"] == rel:
            art["size"], art["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (pkg / MANIFEST).write_text(json.dumps(doc))


def _remote_package(mlp: Model, target: Path, url: str) -> Path:
    """A valid remote package (saved from a live remote model), then pointed at ``url``."""
    mount("http://saved.test", create_app({"mlp": mlp}, dashboard=False))
    try:
        pkg = Model.load("http://saved.test/v2/models/mlp", options={"retries": 0, "timeout": 2}).save(target)
    finally:
        unmount("http://saved.test")
    saved = json.loads((pkg / "remote.json").read_text())
    saved["url"] = f"{url}/v2/models/mlp"
    (pkg / "remote.json").write_text(json.dumps(saved))
    _reseal(pkg, "remote.json")
    return pkg


@pytest.fixture
def repo(tmp_path: Path, mlp: Model, refusing: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    mlp.save(root / "good" / "1")
    _remote_package(mlp, root / "refused" / "1", refusing)
    _remote_package(mlp, root / "down" / "1", f"http://127.0.0.1:{serving.free_port()}")
    mlp.save(root / "crash" / "1")
    real_load = OnnxBackend.load.__func__  # type: ignore[attr-defined]

    def load(cls: type[OnnxBackend], source: Any, **kwargs: Any) -> OnnxBackend:
        if "crash" in Path(str(source)).parts:  # a framework failing in its own way, untyped
            raise RuntimeError(f"cannot map {root}/crash/1/model.onnx: API_KEY={KEY} rejected")
        return real_load(cls, source, **kwargs)

    monkeypatch.setattr(OnnxBackend, "load", classmethod(load))
    monkeypatch.setenv("AIMASS_CLIENT_TOKEN", "client-tok-1")  # never sent: the hosts are not listed
    return root


def _every_text(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.Formatter()
    return "\n".join(handler.format(r) for r in caplog.records)


@pytest.mark.parametrize("max_loaded_models", [0, 8], ids=["eager", "on-demand"])
def test_one_broken_model_never_stops_the_server(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, max_loaded_models: int
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(repository=repo, max_loaded_models=max_loaded_models, model_options={"retries": 0})
    answers: list[httpx.Response] = []
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as c:  # type: ignore[arg-type]
        good = c.post("/v2/models/good/infer", json=_body())
        assert good.status_code == 200, good.text
        for name in ("refused", "down", "crash"):
            for r in (c.post(f"/v2/models/{name}/infer", json=_body()), c.get(f"/v2/models/{name}")):
                answers.append(r)
                # A clear refusal, never a 500 with a framework's traceback text.
                assert r.status_code in (400, 503), (name, r.status_code, r.text)
                assert r.json()["error"].startswith(f"model {name!r}"), r.text
        index = c.post("/v2/repository/index")
        answers.append(index)
        answers.append(c.get("/v2/models/crash/ready"))
        assert c.post("/v2/models/good/infer", json=_body()).status_code == 200  # still serving
    entries = {e["name"]: e for e in index.json()}
    assert entries["good"]["state"] == "READY"
    expected = {"refused": "RemoteError: ", "down": "RemoteError: ", "crash": "RuntimeError: "}
    for name, kind in expected.items():
        entry = entries[name]
        assert entry["state"] == "UNAVAILABLE" and kind in entry["reason"], entry
        assert len(entry["reason"]) <= 220, entry["reason"]
    assert "HTTP 403" in entries["refused"]["reason"] and "cannot reach" in entries["down"]["reason"]
    for r in answers:
        assert SECRET not in r.text and KEY not in r.text and str(tmp_path) not in r.text, r.text
    logged = _every_text(caplog)
    assert SECRET not in logged and KEY not in logged
    # The log says which model is unavailable and why, in the same short words as the index.
    assert "'crash' version '1' is UNAVAILABLE: load failed: RuntimeError" in logged


def _body() -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(X.shape), "data": X.ravel().tolist()}]}


def test_a_remote_answer_stays_out_of_the_message(refusing: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    host = refusing.removeprefix("http://")
    with pytest.raises(RemoteError) as info:
        Model.load(f"{refusing}/v2/models/m", options={"retries": 0})
    e = info.value
    assert e.status_code == 403 and f"HTTP 403 from remote server {host}" in str(e)
    assert SECRET not in str(e) and "/etc/app" not in str(e)
    assert e.detail == "Forbidden. DB_PASSWORD=<redacted> (see .../secrets.env)"
    assert SECRET not in _every_text(caplog) and "DB_PASSWORD=<redacted>" in _every_text(caplog)


def test_a_grpc_remote_answer_stays_out_of_the_message(caplog: pytest.LogCaptureFixture) -> None:
    grpc = pytest.importorskip("grpc")
    caplog.set_level(logging.DEBUG)

    class Refuse(grpc.GenericRpcHandler):  # type: ignore[name-defined]
        def service(self, details: Any) -> Any:
            def refuse(request: bytes, context: Any) -> bytes:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"denied: DB_PASSWORD={SECRET}")
                raise AssertionError("abort raises")

            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Refuse()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(RemoteError) as info:
            Model.load(f"grpc://127.0.0.1:{port}/m", options={"timeout": 5})
    finally:
        server.stop(0)
    e = info.value
    assert e.status_code == 403 and f"gRPC PERMISSION_DENIED from remote server 127.0.0.1:{port}" in str(e)
    assert SECRET not in str(e) and e.detail == "denied: DB_PASSWORD=<redacted>"
    assert SECRET not in _every_text(caplog)


# -- the dashboard (aimass ui) -------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path, mlp: Model) -> Store:
    lib = Store(tmp_path / "lib")
    for name in ("fraud", "churn", "spam"):
        lib.set_alias(name, "production", lib.publish(mlp, name))
    return lib


def _ui(lib: Store) -> httpx.Client:
    return httpx.Client(transport=InProcessTransport(ui_app(lib)), base_url="http://t")  # type: ignore[arg-type]


def test_a_malformed_aliases_file_takes_away_only_its_own_models_aliases(library: Store, tmp_path: Path) -> None:
    (tmp_path / "lib" / "churn" / "aliases.json").write_text('{"aliases": {"production": {"1": "x"}}}')
    rows = {r["name"]: r for r in library.listing()}
    assert set(rows) == {"fraud", "churn", "spam"}
    assert rows["fraud"]["aliases"] == {"production": 1.0} and rows["spam"]["aliases"] == {"production": 1.0}
    assert rows["churn"]["aliases"] == {} and "churn/aliases.json" in rows["churn"]["problem"]
    assert "churn/aliases.json" in str(library.listing())  # the table says why its aliases are missing
    with pytest.raises(StoreError, match="churn/aliases.json"):
        library.aliases("churn")  # asked for directly: still refused, never half-read
    with _ui(library) as c:
        listed = c.get("/dashboard/api/models")
        assert listed.status_code == 200, listed.text
        found = {m["name"]: m for m in listed.json()["models"]}
        assert set(found) == {"fraud", "churn", "spam"}
        assert found["fraud"]["aliases"] == {"production": {"1": 1.0}}
        assert found["churn"]["aliases"] == {} and "churn/aliases.json" in found["churn"]["error"]
        one = c.get("/dashboard/api/models/churn")
        assert one.status_code == 200 and "churn/aliases.json" in one.json()["error"], one.text
        assert c.get("/dashboard/api/models/fraud").json()["aliases"] == {"production": {"1": 1.0}}


def test_dashboard_errors_are_typed_redacted_and_per_model(
    library: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lib_root = tmp_path / "lib"
    (lib_root / "spam" / "1" / MANIFEST).write_text("{not json")  # one model's version manifest broken
    gates = {"aliases": {"production": {"1": 1.0}}, "gates": {"production": "nope"}}  # a gate that is not one
    (lib_root / "churn" / "aliases.json").write_text(json.dumps(gates))
    with _ui(library) as c:
        listed = c.get("/dashboard/api/models")
        assert listed.status_code == 200, listed.text
        found = {m["name"]: m for m in listed.json()["models"]}
        assert found["fraud"]["versions"] == ["1"] and "error" not in found["fraud"]
        assert "spam/1" in found["spam"]["error"] and "gate of alias 'production'" in found["churn"]["error"]
        broken = c.get("/dashboard/api/models/spam/versions/1")
        assert broken.status_code == 400 and broken.json()["type"] == "IntegrityError", broken.text
        assert "spam/1" in broken.json()["error"]
        churn = c.get("/dashboard/api/models/churn/versions/1")  # used to be a 500 AttributeError
        assert churn.status_code == 200 and churn.json()["gates"] == {}, churn.text

        unreadable = f"{lib_root}/fraud/1/{MANIFEST}"

        def info(self: Store, name: str, version: int) -> Any:
            raise PermissionError(13, "Permission denied", unreadable)  # what a file the server cannot read raises

        monkeypatch.setattr(Store, "info", info)
        for path in ("/dashboard/api/models/fraud/versions/1", "/dashboard/api/models/fraud"):
            r = c.get(path)
            assert r.status_code == 500 and r.headers["content-type"] == "application/json", (path, r.text)
            assert r.json() == {
                "error": f"internal error: PermissionError: [Errno 13] Permission denied: '.../{MANIFEST}'",
                "type": "InternalError",
            }, r.text
        r = c.get("/dashboard/api/models")
        assert r.status_code == 200 and all("Permission denied" in m["error"] for m in r.json()["models"])
        assert str(tmp_path) not in r.text
        assert c.get("/dashboard/api/models/ghost").json()["type"] == "ModelNotFound"
    assert "dashboard route 'models/fraud' failed" in caplog.text  # the operator keeps the traceback


def test_redaction_keeps_schema_messages_readable() -> None:
    from aimass.redaction import redact

    schema = "input 'token': expected FP32 shape [-1, 4], got INT8 shape [2]; tokenizer: missing vocab"
    assert redact(schema) == schema
    assert redact("password=abc api-key: xyz") == "password=<redacted> api-key: <redacted>"
