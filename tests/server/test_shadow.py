"""Shadow traffic: requests to an alias are mirrored to a candidate, compared, never answered by it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import models
import numpy as np
import pytest

from aimass import Model
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.shadow import ShadowRule, parse_shadow
from aimass.store import Store


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shadow")
    lib = Store(root / "lib")
    lib.publish(Model.load(models.onnx_mlp(root / "a.onnx", seed=0)), "mlp", alias="production")  # 1
    lib.publish(Model.load(models.onnx_mlp(root / "b.onnx", seed=1)), "mlp")  # 2: another model
    lib.publish(Model.load(models.onnx_mlp(root / "c.onnx", seed=0)), "mlp")  # 3: the same as 1
    return root / "lib"


def _run(app: object, rows: list[np.ndarray], path: str) -> list[v2.InferResponse]:
    async def main() -> list[v2.InferResponse]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            out = []
            for x in rows:
                body, headers = v2.encode_request({"x": x})
                r = await client.post(path, content=body, headers=headers)
                assert r.status_code == 200, r.text
                out.append(v2.decode_response(r.content))
            await app.shadow.drain()  # type: ignore[attr-defined]
            return out

    return asyncio.run(main())


def test_candidates_are_compared_never_answered(library: Path) -> None:
    rules = [ShadowRule("mlp", "production", "2"), ShadowRule("mlp", "staging", "3", share=0.5)]
    # Every request mirrored: room for all of them in flight (the bound is tested in
    # tests/security/test_bounded_queues.py); the default of 8 drops some of these back-to-back requests.
    app = create_app(repository=library, shadow=rules, max_batch_size=0, shadow_max_in_flight=64)
    x, _ = models.dataset(200, seed=5)
    rows = list(np.array_split(x, 40))
    answers = _run(app, rows, "/v2/models/mlp/versions/production/infer")
    v1 = Model.load(library / "mlp" / "1")
    for got, sent in zip(answers, rows, strict=True):
        assert got.model_version == "1"  # the alias answers, always
        np.testing.assert_allclose(got.outputs["y"], v1.predict(sent)["y"], rtol=1e-6)
    assert app.shadow is not None
    report = {r["candidate"]: r for r in app.shadow.report()}
    v2_ = Model.load(library / "mlp" / "2")
    expected = (v1.predict(x)["y"].argmax(1) == v2_.predict(x)["y"].argmax(1)).mean()
    assert report["2"]["requests"] == 40 and report["2"]["rows"] == 200 and report["2"]["errors"] == 0
    assert report["2"]["dropped"] == 0
    assert report["2"]["agreement"] == pytest.approx(expected) and expected < 1.0  # a different model shows
    assert report["2"]["max_abs_diff"] > 0.01
    assert report["3"]["requests"] == 0  # nothing was sent to "staging"
    text = app.metrics.render()[0].decode()
    assert 'aimass_shadow_rows_total{alias="production",candidate="2",model="mlp"} 200.0' in text


def test_identical_candidate_agrees_and_share_is_drawn(library: Path) -> None:
    rules = [ShadowRule("mlp", "production", "3", share=0.5)]
    app = create_app(repository=library, shadow=rules, max_batch_size=0, shadow_max_in_flight=256)
    x, _ = models.dataset(400, seed=6)
    _run(app, list(np.array_split(x, 200)), "/v2/models/mlp/versions/production/infer")
    assert app.shadow is not None
    (report,) = app.shadow.report()
    assert 60 < report["requests"] < 140  # about half of 200
    assert report["agreement"] == 1.0 and report["max_abs_diff"] == 0.0
    assert parse_shadow("mlp@production=3:0.5") == ShadowRule("mlp", "production", "3", 0.5)
    with pytest.raises(ValueError, match="MODEL@ALIAS=VERSION"):
        parse_shadow("mlp=3")
