"""Drift-triggered update: served inputs shift, labels arrive, an update is trained, gated, published,
canaried and promoted (or refused by its gate), each step an event in the model's timeline."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from aimass import Model
from aimass.evaluate import evaluate
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.canary import CanaryPolicy
from aimass.server.drift_update import DriftPolicy
from aimass.server.payload_log import read_payloads
from aimass.server.policies import Policies, PolicyRunner, load_policies
from aimass.store import Store
from aimass.store.events import read_events

xgb = pytest.importorskip("xgboost")


def world(n: int, seed: int, boundary: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their true labels; ``boundary`` moves the rule on feature 0 (the world changes)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[:, 0] += boundary
    return x, (x[:, 0] > boundary).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _setup(tmp: Path, **drift: Any) -> tuple[Store, Any, PolicyRunner, Clock, Path]:
    lib = Store(tmp / "lib")
    x, y = world(2000, seed=0)
    model = Model.load(xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y), name="fraud")
    x_test, y_test = world(500, seed=1)
    lib.publish(model, "fraud", metrics=evaluate(model, x_test, y_test, metrics=["accuracy"]), reference=x)
    lib.set_alias("fraud", "production", 1)
    logs, labels = tmp / "payloads", tmp / "labels.csv"
    app = create_app(repository=lib.root, max_batch_size=0, log_payloads=str(logs), dashboard=False)
    clock = Clock()
    policies = Policies(
        canary=[
            CanaryPolicy(
                model="fraud", alias="production", window=2.0, steps=[0.5], min_requests=10,
                latency_quantile=0.5, max_latency_ratio=10.0,
            )
        ],
        drift=[
            DriftPolicy(
                model="fraud", labels=str(labels), threshold=0.2, window=3.0, min_rows=200,
                update={"rounds": 30}, canary_weight=0.5, **drift,
            )
        ],
    )  # fmt: skip
    runner = PolicyRunner(policies, app.repository, registry=app.metrics.registry, payload_log=str(logs), clock=clock)
    return lib, app, runner, clock, labels


async def _send(app: Any, runner: PolicyRunner, clock: Clock, x: np.ndarray, requests: int) -> list[str]:
    """Requests of the drifted world to the alias, the clock moving 0.1 s and the policies looking after each."""
    versions = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for rows in np.array_split(x, requests):
            body, headers = v2.encode_request({"input": rows})
            r = await client.post("/v2/models/fraud/versions/production/infer", content=body, headers=headers)
            assert r.status_code == 200, r.text
            versions.append(r.json()["model_version"])
            clock.t += 0.1
            await runner.tick()
    return versions


def _label(logs: Path, labels: Path) -> int:
    """The labelling step: what the new world says each logged row was, joined by request id and row."""
    logged = read_payloads(logs, model="fraud")
    x = logged.inputs["input"]
    y = (x[:, 0] > 1.0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    with labels.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["request_id", "row", "label"])
        out.writerows(zip(logged.request_ids, logged.rows, y, strict=True))
    return len(y)


def test_drift_ends_in_a_published_canaried_promoted_update(tmp_path: Path) -> None:
    lib, app, runner, clock, labels = _setup(tmp_path)
    x_live, _ = world(800, seed=2, boundary=1.0)

    async def scenario() -> list[str]:
        await _send(app, runner, clock, x_live[:500], 50)  # drift lasts 3 s; no labels yet
        app.payload_log.close()  # the logs of this period are complete
        assert _label(tmp_path / "payloads", labels) == 500  # labels arrive
        return await _send(app, runner, clock, x_live[500:], 120)

    versions = asyncio.run(scenario())
    assert lib.versions("fraud") == [1, 2]
    assert lib.alias("fraud", "production") == {2: 1.0}  # canaried, then promoted
    assert versions[-10:] == ["2"] * 10
    timeline = [(e.kind, e.action, e.version) for e in read_events(lib, "fraud")]
    assert timeline == [
        ("drift", "drifted", 1),
        ("drift", "no-labels", 1),
        ("drift", "publish", 2),
        ("drift", "canary", 2),
        ("canary", "promote", 2),
    ]
    publish = read_events(lib, "fraud")[2]
    assert publish.measured["accuracy_update"] > publish.measured["accuracy_served"]  # type: ignore[operator]
    info = lib.info("fraud", 2)
    assert info.tags["trigger"] == "drift" and info.has_profile  # monitored against the new world
    assert info.metrics["accuracy"] == publish.measured["accuracy_update"]


def test_an_update_that_fails_its_gate_is_refused(tmp_path: Path) -> None:
    lib, app, runner, clock, labels = _setup(tmp_path, gate={"accuracy": ">=0.9999"})
    x_live, _ = world(800, seed=2, boundary=1.0)

    async def scenario() -> None:
        await _send(app, runner, clock, x_live[:500], 50)
        app.payload_log.close()
        _label(tmp_path / "payloads", labels)
        await _send(app, runner, clock, x_live[500:], 60)

    asyncio.run(scenario())
    assert lib.versions("fraud") == [1]  # nothing published
    assert lib.alias("fraud", "production") == {1: 1.0}
    events = read_events(lib, "fraud")
    assert [e.action for e in events] == ["drifted", "no-labels", "refused"]
    refused = events[-1]
    assert "accuracy" in refused.reason and "0.9999" in refused.reason
    assert refused.measured["holdout_rows"] == 150  # 30 % of the 500 labelled rows


def test_policy_file(tmp_path: Path) -> None:
    file = tmp_path / "policies.yaml"
    file.write_text(
        "interval: 2\ncanary:\n  - {model: fraud, alias: production, window: 30, steps: [0.1, 0.5]}\n"
        "drift:\n  - {model: fraud, labels: labels.csv, max_drop: 0.01, update: {rounds: 5}}\n"
    )
    policies = load_policies(file)
    assert policies.interval == 2 and policies.canary[0].steps == [0.1, 0.5]
    assert policies.drift[0].update == {"rounds": 5}
    assert policies.drift[0].labels == str(tmp_path / "labels.csv")  # relative to the file
    file.write_text("canary:\n  - {model: fraud, alias: production, steps: [0.5, 0.1]}\n")
    from aimass.errors import StoreError

    with pytest.raises(StoreError, match=r"policies.yaml.*canary.0.steps"):
        load_policies(file)
