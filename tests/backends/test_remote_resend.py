"""The remote client and lost or broken answers.

An inference a proxy lost (502/503/504) is sent again and counted (``resend``); an answer that does
not decode is a RemoteError (502), not a SchemaError about the caller's input.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model, RemoteError
from aimass.backends.remote import mount, unmount
from aimass.server import create_app

BASE = "http://resend.test"


class LosingProxy:
    """Before a real aimass app: the first ``lose`` inferences get ``status``, as from a proxy whose replica died."""

    def __init__(self, app: Any, lose: int, status: int = 502, body: bytes = b"upstream connect error") -> None:
        self.app, self.lose, self.status, self.body, self.seen = app, lose, status, body, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            self.seen += 1
            if self.seen <= self.lose:
                await send({"type": "http.response.start", "status": self.status, "headers": []})
                await send({"type": "http.response.body", "body": self.body})
                return
        await self.app(scope, receive, send)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_lost_inference_is_sent_again_and_counted(tmp_path: Path, status: int) -> None:
    local = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    proxy = LosingProxy(create_app({"mlp": local}), lose=2, status=status)
    mount(BASE, proxy)
    try:
        x = np.ones((3, 4), np.float32)
        remote = Model.load(f"{BASE}/v2/models/mlp", options={"resend": 3})
        np.testing.assert_allclose(remote.predict(x)["y"], local.predict(x)["y"], rtol=1e-6)
        assert remote.backend.resent == 2
        proxy.seen = 0
        assert asyncio.run(remote.apredict(x))["y"].shape == (3, 3)
        assert remote.backend.resent == 4
        # Off by default: an answer that reached a server is not sent twice unless asked.
        proxy.seen = 0
        with pytest.raises(RemoteError) as info:
            Model.load(f"{BASE}/v2/models/mlp").predict(x)
        assert info.value.status_code == status
        # Never past the count asked for.
        proxy.seen, proxy.lose = 0, 5
        with pytest.raises(RemoteError):
            Model.load(f"{BASE}/v2/models/mlp", options={"resend": 2}).predict(x)
        assert proxy.seen == 3
    finally:
        unmount(BASE)


def test_a_models_own_error_is_not_sent_again(tmp_path: Path) -> None:
    local = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    # A V2 error document with 500 is the model failing (PredictionError): sending it again changes nothing.
    proxy = LosingProxy(create_app({"mlp": local}), lose=1, status=500, body=b'{"error": "the model failed"}')
    mount(BASE, proxy)
    try:
        remote = Model.load(f"{BASE}/v2/models/mlp", options={"resend": 3})
        with pytest.raises(RemoteError) as info:
            remote.predict(np.ones((1, 4), np.float32))
        assert info.value.status_code == 500 and proxy.seen == 1 and remote.backend.resent == 0
    finally:
        unmount(BASE)


class BrokenAnswer:
    """Answers every inference with 200 and ``body`` (with ``headers``): a server whose answer does not decode."""

    def __init__(self, app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.body, self.headers = app, body, headers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"DB_PASSWORD=hunter2", []),
        (b'{"outputs": 5}', []),
        (b'{"outputs": []}', [(b"inference-header-content-length", b"lots")]),
    ],
)
def test_an_answer_that_does_not_decode_is_a_remote_error(
    tmp_path: Path, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    local = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    mount(BASE, BrokenAnswer(create_app({"mlp": local}), body, headers))
    try:
        remote = Model.load(f"{BASE}/v2/models/mlp")
        x = np.ones((3, 4), np.float32)
        with pytest.raises(RemoteError) as info:
            remote.predict(x)
        assert info.value.status_code == 502  # the server's fault, not a SchemaError about the caller's input
        assert "hunter2" not in str(info.value)
        with pytest.raises(RemoteError):
            asyncio.run(remote.apredict(x))
    finally:
        unmount(BASE)
