"""Browser-facing safety and slow clients (issue 24, items 7 and 9).

- A page on another origin cannot change the server's state: the request a ``fetch(..., {mode:
  "no-cors"})`` or a form sends (text/plain or form types, no custom header, ``Origin`` of the page)
  is refused and the model stays loaded; JSON, the binary extension and tritonclient's requests pass.
- DNS rebinding: a server on loopback (``aimass serve``'s default) refuses a foreign ``Host``.
- Listening beyond loopback without a token is warned about at start.
- Slow clients (real sockets to a real uvicorn on 127.0.0.1 with 1 s deadlines) are cut and
  counted while a normal client is served.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.protocol import v2
from aimass.server import create_app

X = np.ones((2, 4), np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    Model.load(models.onnx_mlp(root / "m.onnx")).save(root / "m" / "1")
    return root


def _client(app: Any, host: str = "localhost:8000") -> httpx.Client:
    return httpx.Client(transport=InProcessTransport(app), base_url=f"http://{host}")


def _loaded(app: Any) -> bool:
    return any(e["name"] == "m" and e["state"] == "READY" for e in app.repository.index())


def _infer_ok(client: httpx.Client) -> bool:
    body, headers = v2.encode_request({"x": X})
    return client.post("/v2/models/m/infer", content=body, headers=headers).status_code == 200


# -- cross-site requests ---------------------------------------------------------------------------

EVIL = "http://evil.example"
NO_CORS = [  # what a page can send without the server's consent (no preflight)
    pytest.param({"content-type": "text/plain;charset=UTF-8", "origin": EVIL}, b"", id="fetch-no-cors-text"),
    pytest.param({"origin": EVIL}, b"", id="fetch-no-cors-no-body"),
    pytest.param({"origin": EVIL}, b"{}", id="fetch-no-cors-blob"),
    pytest.param({"content-type": "application/x-www-form-urlencoded", "origin": EVIL}, b"a=1", id="form"),
    pytest.param({"content-type": "multipart/form-data; boundary=x", "origin": "null"}, b"", id="sandboxed-form"),
    pytest.param({"content-type": "text/plain"}, b"{}", id="text-without-origin"),
    pytest.param({}, b"", id="bare-post-without-origin"),
]


@pytest.mark.parametrize(("headers", "body"), NO_CORS)
@pytest.mark.parametrize("action", ["unload", "load"])
def test_a_cross_site_request_cannot_load_or_unload(
    repo: Path, headers: dict[str, str], body: bytes, action: str
) -> None:
    app = create_app(repository=repo)
    with _client(app) as c:
        if action == "load":
            assert c.post("/v2/repository/models/m/unload", json={}).status_code == 200
        before = _loaded(app)
        r = c.post(f"/v2/repository/models/m/{action}", content=body, headers=headers)
        assert r.status_code in (403, 415), r.text
        assert isinstance(r.json()["error"], str) and r.headers["content-type"] == "application/json"
        assert _loaded(app) == before  # nothing changed
        if action == "unload":
            assert _infer_ok(c)


@pytest.mark.parametrize(("headers", "body"), NO_CORS[:4])
def test_a_cross_site_page_cannot_run_inference(repo: Path, headers: dict[str, str], body: bytes) -> None:
    app = create_app(repository=repo)
    with _client(app) as c:
        infer = v2.encode_request({"x": X})[0]
        r = c.post("/v2/models/m/infer", content=infer if body else b"", headers=headers)
        assert r.status_code in (403, 415), r.text
        assert app.metrics.registry.get_sample_value("aimass_requests_total", {"model": "m", "version": "1"}) in (
            None,
            0.0,
        )


def test_the_refusals_say_why(repo: Path) -> None:
    with _client(create_app(repository=repo)) as c:
        r = c.post(
            "/v2/repository/models/m/unload", content=b"", headers={"origin": EVIL, "content-type": "text/plain"}
        )
        assert r.status_code == 403
        assert "'http://evil.example'" in r.json()["error"] and "--allowed-origins" in r.json()["error"]
        r = c.post("/v2/repository/models/m/unload", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        r = c.post("/v2/repository/models/m/unload")
        assert r.status_code == 415 and "X-Requested-With" in r.json()["error"]


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"content-type": "application/json"}, b"", id="json-no-body"),
        pytest.param({"x-requested-with": "curl"}, b"", id="custom-header"),
        pytest.param({}, b"{}", id="tritonclient"),  # tritonclient's load/unload: '{}' and no Content-Type
        pytest.param({"content-type": "application/json", "origin": "http://localhost:8000"}, b"{}", id="same-origin"),
        pytest.param({"content-type": "application/json", "origin": "https://ui.example.com"}, b"", id="listed-origin"),
        pytest.param({"content-type": "text/plain", "x-requested-with": "x"}, b"{}", id="text-with-custom-header"),
    ],
)
def test_clients_and_allowed_origins_still_unload(repo: Path, headers: dict[str, str], body: bytes) -> None:
    app = create_app(repository=repo, allowed_origins=["https://ui.example.com/"])
    with _client(app) as c:
        r = c.post("/v2/repository/models/m/unload", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert not _loaded(app)


def test_v2_clients_still_infer(repo: Path) -> None:
    app = create_app(repository=repo)
    with _client(app) as c:
        assert _infer_ok(c)  # aimass's encoder: application/json
        body, headers = v2.encode_request({"x": X}, binary=True)  # octet-stream + Inference-Header-Content-Length
        assert c.post("/v2/models/m/infer", content=body, headers=headers).status_code == 200
        json_body, _ = v2.encode_request({"x": X})
        assert c.post("/v2/models/m/infer", content=json_body).status_code == 200  # tritonclient: no Content-Type
        local = Model.load("http://localhost:8000/v2/models/m", options={"transport": InProcessTransport(app)})
        np.testing.assert_allclose(local.predict({"x": X})["y"], Model.load(repo / "m" / "1").predict({"x": X})["y"])


# -- DNS rebinding ---------------------------------------------------------------------------------


def _cli_app(repo: Path, **server: Any) -> Any:
    """The app ``aimass serve`` builds for these options."""
    from aimass.cli.options import ServerOptions

    return create_app(repository=repo, settings=ServerOptions(**server).settings())


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", ""])
def test_a_foreign_host_is_refused_on_a_loopback_server(repo: Path, host: str) -> None:
    app = _cli_app(repo, host="127.0.0.1")
    with _client(app) as c:
        for path in ("/v2/models/m", "/v2", "/metrics", "/", "/dashboard/api/models"):
            r = c.get(path, headers={"host": host})
            assert r.status_code == 400, (path, r.status_code)
            assert "not served here" in r.json()["error"] and "--allowed-hosts" in r.json()["error"]
            assert "READY" not in r.text
        assert c.get("/v2/health/ready", headers={"host": host}).status_code == 200  # probes address pods by IP


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:9", "[::1]:8000"]
)
def test_loopback_hosts_are_served(repo: Path, host: str) -> None:
    app = _cli_app(repo, host="127.0.0.1")
    with _client(app, host) as c:
        assert c.get("/v2/models/m").status_code == 200
        assert c.get("/").status_code == 200  # the dashboard
        assert c.get("/dashboard/api/models").status_code == 200
        assert _infer_ok(c)


def test_allowed_hosts_and_a_server_beyond_loopback(repo: Path) -> None:
    listed = _cli_app(repo, host="127.0.0.1", allowed_hosts="api.example.com, *.svc.local")
    with _client(listed, "api.example.com") as c:
        assert c.get("/v2/models/m").status_code == 200
        assert c.get("/v2/models/m", headers={"host": "m.ns.svc.local:80"}).status_code == 200
        assert c.get("/v2/models/m", headers={"host": "localhost"}).status_code == 400  # the list replaces the default
    for app in (_cli_app(repo, host="0.0.0.0"), _cli_app(repo, host="127.0.0.1", allowed_hosts="*")):
        with _client(app, "anything.example") as c:
            assert c.get("/v2/models/m").status_code == 200


# -- warnings at start -----------------------------------------------------------------------------


def test_listening_beyond_loopback_without_a_token_warns(repo: Path) -> None:
    port = serving.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("AIMASS_SERVER_TOKEN", "AIMASS_AUTH_TOKEN")}
    cmd = [sys.executable, "-m", "aimass", "serve", str(repo), "--host", "0.0.0.0", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        serving.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60, process=proc)
        # Any Host is accepted beyond loopback, as warned.
        r = httpx.get(f"http://127.0.0.1:{port}/v2/models/m", headers={"host": "any.example"}, timeout=5)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert re.search(r"warning: listening on 0\.0\.0\.0 without a bearer token", err), err
    assert "accepting any Host header" in err and "--allowed-hosts" in err


def test_no_warning_on_loopback_or_with_a_token_and_hosts() -> None:
    from aimass.cli.serve import warn_exposure

    assert warn_exposure("127.0.0.1", token=False, allowed_hosts=("localhost",)) == []
    assert warn_exposure("::1", token=False, allowed_hosts=None) == []
    assert warn_exposure("0.0.0.0", token=True, allowed_hosts=("api.example.com",)) == []
    assert len(warn_exposure("192.0.2.1", token=False, allowed_hosts=None)) == 2


# -- slow clients ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(app: Any, http: str, header_timeout: float, body_timeout: float) -> Iterator[int]:
    """``app`` on a real uvicorn at 127.0.0.1 with aimass's protocol settings (lifespan on), in a thread."""
    import uvicorn

    from aimass.server.deadlines import protocol
    from aimass.server.run import uvicorn_options

    options = uvicorn_options(header_timeout=header_timeout, body_timeout=body_timeout) | {"loop": "asyncio"}
    options["http"] = protocol(http, header_timeout=header_timeout, body_timeout=body_timeout)
    port = serving.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _connect(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``s`` within ``seconds``, and what it wrote before."""
    s.settimeout(seconds)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def _slow_body(port: int) -> socket.socket:
    head = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    return _connect(port, head + b'{"inputs":')  # 10 of 1000 body bytes, then nothing


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_slow_bodies_and_headers_are_cut_while_others_are_served(repo: Path, http: str) -> None:
    app = create_app(repository=repo, allowed_hosts=["localhost", "127.0.0.1"])
    with _server(app, http, header_timeout=1.0, body_timeout=1.0) as port:
        start = time.monotonic()
        bodies = [_slow_body(port) for _ in range(50)]
        headers = [_connect(port, b"POST /v2/models/m/infer HTTP/1.1\r\nHost: loc") for _ in range(10)]
        idle = [_connect(port, b"") for _ in range(5)]
        # A normal client is served at once meanwhile, several requests on one connection.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(3):
                t = time.monotonic()
                assert _infer_ok(client)
                assert time.monotonic() - t < 0.5
        for s in bodies + headers + idle:
            closed, got = _closed_within(s, 5.0)
            assert closed, "a slow client is still connected"
            if s in idle:
                assert got == b""  # never used: closed without an answer
            else:
                assert got.startswith(b"HTTP/1.1 408 "), got[:100]
                assert b"not received within 1 s" in got
            s.close()
        elapsed = time.monotonic() - start
        assert elapsed < 6, f"slow clients were cut after {elapsed:.1f} s"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"host": "localhost"}).text
        counts = dict(re.findall(r'aimass_slow_clients_total\{phase="(\w+)"\} (\S+)', metrics))
        assert {k: float(v) for k, v in counts.items()} == {"body": 50.0, "headers": 10.0, "idle": 5.0}


def test_a_slow_but_steady_client_within_the_deadline_is_served(repo: Path) -> None:
    app = create_app(repository=repo)
    with _server(app, "httptools", header_timeout=1.0, body_timeout=2.0) as port:
        body, _ = v2.encode_request({"x": X})
        head = (
            f"POST /v2/models/m/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with _connect(port, head) as s:
            for i in range(0, len(body), len(body) // 4 + 1):  # the body in 4 parts over ~0.9 s
                time.sleep(0.3)
                s.sendall(body[i : i + len(body) // 4 + 1])
            s.settimeout(5)
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        # The connection stays usable after its deadlines were met: keep-alive is uvicorn's to close.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert _infer_ok(client)
            time.sleep(1.5)  # longer than the header deadline, shorter than uvicorn's keep-alive (5 s)
            assert _infer_ok(client)


def test_the_library_dashboard_refuses_a_foreign_host(tmp_path: Path) -> None:
    from aimass.server.browser import allowed_hosts_for
    from aimass.server.dashboard import ui_app
    from aimass.store import Store

    app = ui_app(Store(str(tmp_path)), allowed_hosts=allowed_hosts_for("127.0.0.1"))  # what `aimass ui` builds
    with _client(app) as c:
        assert c.get("/dashboard/api/models").status_code == 200
        r = c.get("/dashboard/api/models", headers={"host": "attacker.example"})
        assert r.status_code == 400 and "not served here" in r.json()["error"]
