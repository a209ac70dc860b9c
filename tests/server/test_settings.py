"""ServerSettings: one name per knob, taken by create_app, serve_workers and aimass.scale.deploy alike."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import httpx
import models
import numpy as np
import pydantic
import pytest

from aimass import scale
from aimass.protocol import v2
from aimass.server import ServerSettings, create_app
from aimass.server.settings import RENAMED, build_settings


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    return models.onnx_mlp(tmp_path_factory.mktemp("settings") / "mlp.onnx")


def test_cli_spellings_are_parsed_and_the_token_is_not_shown() -> None:
    s = ServerSettings(
        max_queue_delay="500us", memory_budget="8GiB", request_timeout=None, shadow=["fraud@production=4:0.2"]
    )
    assert (s.max_queue_delay, s.memory_budget, s.request_timeout) == (0.0005, 8 << 30, 0.0)
    assert (s.shadow[0].model, s.shadow[0].candidate, s.shadow[0].share) == ("fraud", "4", 0.2)
    assert ServerSettings(allowed_hosts="a.example, b.example").allowed_hosts == ("a.example", "b.example")
    assert ServerSettings(max_elements=0).max_elements == v2.DEFAULT_MAX_ELEMENTS
    secret = ServerSettings(auth_token="s3cret-token")
    assert "s3cret-token" not in repr(secret) and "s3cret-token" not in str(secret)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        secret.threads = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="'soon' is not a duration"):
        ServerSettings(max_queue_delay="soon")
    with pytest.raises(ValueError, match="workers"):
        ServerSettings(workers=0)


def test_settings_and_keywords_build_the_same_app(mlp: Path) -> None:
    keywords = {"threads": 3, "max_body_size": "1KiB", "auth_token": "tok", "max_batch_size": 0, "dashboard": False}
    by_keyword = create_app({"mlp": mlp}, **keywords)
    by_settings = create_app({"mlp": mlp}, settings=ServerSettings(**keywords))
    over = create_app({"mlp": mlp}, settings=ServerSettings(**keywords), max_body_size=2048)  # keywords win
    for app in (by_keyword, by_settings):
        assert (app.max_body_size, app.auth.token, app.dashboard) == (1024, "tok", None)
        assert app.executor._max_workers == 3  # the model thread pool: threads, not workers
    assert over.max_body_size == 2048 and over.auth.token == "tok"

    async def call() -> int:
        transport = httpx.ASGITransport(app=by_settings)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = v2.encode_request({"x": np.zeros((2, 4), np.float32)})[0]
            headers = {"authorization": "Bearer tok"}
            big = await client.post("/v2/models/mlp/infer", content=b" " * 2000, headers=headers)
            ok = await client.post("/v2/models/mlp/infer", content=body, headers=headers)
            assert ok.status_code == 200, ok.text
            return big.status_code

    assert asyncio.run(call()) == 413  # max_body_size="1KiB" reached the app


def test_former_keywords_still_work_with_a_warning(mlp: Path) -> None:
    assert set(RENAMED.values()) <= set(ServerSettings.model_fields)
    with pytest.warns(DeprecationWarning, match=r"create_app\(pinned=...\) is now create_app\(pin=...\)"):
        create_app({"mlp": mlp}, pinned=["mlp"], max_concurrency=3, dashboard=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the names of the flags warn of nothing
        create_app({"mlp": mlp}, pin=["mlp"], instances=3, dashboard=False)
    with pytest.warns(DeprecationWarning):
        former = build_settings(None, {"pinned": ["mlp"], "max_concurrency": 3, "payload_max_age": 60}, where="f")
    assert former == ServerSettings(pin=["mlp"], instances=3, log_max_age=60)
    with pytest.raises(TypeError, match="one setting, 'pin'"):
        create_app({"mlp": mlp}, pinned=["a"], pin=["b"])


def test_workers_never_means_threads(mlp: Path) -> None:
    with pytest.raises(TypeError, match="'workers' counts server processes.*'threads'"):
        create_app({"mlp": mlp}, workers=8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_batch'"):
        create_app({"mlp": mlp}, max_batch=8)
    # A process's settings may say how many processes there are: its app just has its own pool.
    app = create_app({"mlp": mlp}, settings=ServerSettings(workers=4, threads=2), dashboard=False)
    assert app.executor._max_workers == 2


def test_scale_serve_is_deploy_under_its_former_name() -> None:
    with (
        pytest.warns(DeprecationWarning, match="aimass.scale.serve is now aimass.scale.deploy"),
        pytest.raises(ValueError, match="deploy needs at least one model"),  # before any Ray import
    ):
        scale.serve({}, app_options={"max_queue_size": 4})
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_batch'"):
        scale.deploy({"m": "http://127.0.0.1:9/v2/models/m"}, max_batch=8)
