"""Canary analysis: a canary that errs or slows down is rolled back within the window while clients
keep sending; a healthy one is stepped up to 100 %; decisions are events, recorded once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import models
import numpy as np
import pytest
from python_models import Faulty

from aimass import Model
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.canary import CanaryAnalysis, CanaryPolicy
from aimass.server.decisions import Decisions
from aimass.store import Store
from aimass.store.events import read_events


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _library(tmp: Path, canary: str) -> Store:
    lib = Store(tmp / "lib")
    mlp = models.onnx_mlp(tmp / "mlp.onnx", seed=0)
    lib.publish(Model.load(mlp), "mlp", alias="production")  # 1: stable
    if canary == "healthy":
        lib.publish(Model.load(mlp), "mlp")  # 2: the same answers
    else:
        fault = tmp / "fault.txt"
        fault.write_text("fail" if canary == "failing" else "slow 0.03")
        lib.publish(Model.load(Faulty(), artifacts={"fault": fault, "mlp": mlp}), "mlp")  # 2
    return lib


async def _traffic(
    app: Any, analysis: CanaryAnalysis, clock: Clock, requests: int, step: float
) -> tuple[list[int], list[str], list[tuple[float, str]]]:
    """Send ``requests`` to the alias, one at a time; the clock moves ``step`` s and the analysis ticks
    after each. Statuses, answering versions, and (time, action) of each decision."""
    x, _ = models.dataset(requests, seed=3)
    statuses, versions, decided = [], [], []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for row in x:
            body, headers = v2.encode_request({"x": row[None, :]})
            r = await client.post("/v2/models/mlp/versions/production/infer", content=body, headers=headers)
            statuses.append(r.status_code)
            versions.append(r.json()["model_version"] if r.status_code == 200 else "")
            clock.t += step
            decided += [(clock.t, e.action) for e in analysis.tick()]
    return statuses, versions, decided


def _analysis(app: Any, lib: Store, clock: Clock, **policy: Any) -> CanaryAnalysis:
    # Medians: a 2-core machine shared with other work has stray slow requests in any version.
    settings = {"model": "mlp", "alias": "production", "window": 10.0, "min_requests": 10, "latency_quantile": 0.5}
    settings.update(policy)
    decisions = Decisions(lib, registry=app.metrics.registry)
    return CanaryAnalysis(CanaryPolicy(**settings), decisions, registry=app.metrics.registry, clock=clock)


@pytest.mark.parametrize("canary", ["failing", "slow"])
def test_bad_canary_is_rolled_back_within_the_window(tmp_path: Path, canary: str) -> None:
    lib = _library(tmp_path, canary)
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    app = create_app(repository=lib.root, max_batch_size=0, model_options={"trust_code": True}, dashboard=False)
    clock = Clock()
    analysis = _analysis(app, lib, clock, max_latency_ratio=3.0)
    started = clock.t
    statuses, versions, decided = asyncio.run(_traffic(app, analysis, clock, 120, step=0.05))

    assert [a for _, a in decided] == ["rollback"]
    when = decided[0][0]
    assert when - started < analysis.policy.window  # rolled back inside the first window
    assert lib.alias("mlp", "production") == {1: 1.0}  # the canary's weight is 0
    cut = round((when - started) / 0.05)
    assert set(versions[cut:]) == {"1"}  # after it, every request is answered by the stable version
    failed = statuses.count(500)
    if canary == "failing":
        # every canary request failed until the rollback, and no more than the analysis needed to judge
        assert 10 <= failed <= 10 + 2 and set(statuses[cut:]) == {200}
    else:
        assert failed == 0
    (event,) = read_events(lib, "mlp")
    assert event.action == "rollback" and event.version == 2 and event.weights == {"1": 1.0}
    assert (event.measured["canary_requests"] or 0) >= 10
    key = "error_rate_delta" if canary == "failing" else "latency_ratio"
    bound = "max_error_rate_delta" if canary == "failing" else "max_latency_ratio"
    assert event.measured[key] > event.thresholds[bound]  # type: ignore[operator]
    metrics = app.metrics.render()[0].decode()
    line = (
        'aimass_policy_decisions_total{action="rollback",alias="production",dry_run="false",kind="canary",model="mlp"}'
    )
    assert f"{line} 1.0" in metrics


def test_healthy_canary_is_promoted_step_by_step(tmp_path: Path) -> None:
    lib = _library(tmp_path, "healthy")
    lib.set_alias("mlp", "production", {1: 0.8, 2: 0.2})
    app = create_app(repository=lib.root, max_batch_size=0, dashboard=False)
    clock = Clock()
    analysis = _analysis(app, lib, clock, steps=[0.2, 0.5], window=2.0, max_latency_ratio=5.0)
    statuses, versions, decided = asyncio.run(_traffic(app, analysis, clock, 300, step=0.05))

    assert set(statuses) == {200}
    assert [a for _, a in decided] == ["step", "promote"]
    assert lib.alias("mlp", "production") == {2: 1.0}
    events = read_events(lib, "mlp")
    assert [(e.action, e.weights) for e in events] == [("step", {"1": 0.5, "2": 0.5}), ("promote", {"2": 1.0})]
    assert versions[-20:] == ["2"] * 20  # after promotion the canary answers everything


def test_dry_run_records_and_moves_nothing(tmp_path: Path) -> None:
    lib = _library(tmp_path, "failing")
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    app = create_app(repository=lib.root, max_batch_size=0, model_options={"trust_code": True}, dashboard=False)
    clock = Clock()
    analysis = _analysis(app, lib, clock, dry_run=True)
    statuses, _, decided = asyncio.run(_traffic(app, analysis, clock, 80, step=0.05))
    assert lib.alias("mlp", "production") == {1: 0.5, 2: 0.5}  # nothing moved
    assert {a for _, a in decided} == {"rollback"}
    events = read_events(lib, "mlp")
    assert len(events) == 1 and events[0].dry_run  # recorded once, however often it was decided again
    assert statuses.count(500) > 20  # clients still reach the failing canary


def test_a_restart_finishes_a_recorded_decision_without_taking_another(tmp_path: Path) -> None:
    lib = _library(tmp_path, "healthy")
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    app = create_app(repository=lib.root, max_batch_size=0, dashboard=False)
    clock = Clock()
    analysis = _analysis(app, lib, clock, steps=[0.5, 0.8], window=2.0, max_latency_ratio=5.0)
    # The server stops after recording the step and before moving the alias: set it back by hand.
    asyncio.run(_traffic(app, analysis, clock, 60, step=0.05))
    assert [e.action for e in read_events(lib, "mlp")] == ["step"]
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    again = create_app(repository=lib.root, max_batch_size=0, dashboard=False)  # the restarted server
    restarted = _analysis(again, lib, Clock(), steps=[0.5, 0.8], window=2.0, max_latency_ratio=5.0)
    (finished,) = restarted.tick()
    assert finished.action == "step"
    assert lib.alias("mlp", "production") == {1: 0.2, 2: 0.8}
    assert [e.action for e in read_events(lib, "mlp")] == ["step"]  # carried out, not recorded again
    assert restarted.tick() == []  # a fresh window at the new weight


def test_quantile_matches_prometheus() -> None:
    from aimass.server.canary import _Counts

    counts = _Counts(requests=100, buckets=((0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)))
    assert counts.quantile(0.5) == pytest.approx(0.001)
    assert counts.quantile(0.99) == pytest.approx(0.01 + 0.09 * 0.9)
    assert _Counts().quantile(0.99) is None
    assert np.isfinite(counts.quantile(0.999) or 0)


def test_store_show_prints_the_timeline(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from aimass.cli import app as cli_app
    from aimass.store.events import Event, append_event

    lib = _library(tmp_path, "healthy")
    event = Event(
        model="mlp", alias="production", kind="canary", action="rollback", version=2, reason="too slow", decision="k"
    )
    assert append_event(lib, event) and not append_event(lib, event)  # one record per decision
    runner = CliRunner()
    out = runner.invoke(cli_app(), ["store", "show", "mlp", "--root", lib.root])
    assert out.exit_code == 0, out.output
    assert "canary rollback v2: too slow" in out.output
    out = runner.invoke(cli_app(), ["store", "show", "mlp", "--root", lib.root, "--json"])
    assert [e["action"] for e in json.loads(out.output)["events"]] == ["rollback"]


def test_the_server_runs_its_policy_file(tmp_path: Path) -> None:
    """``create_app(policies=FILE)`` under uvicorn: the lifespan starts the analysis, which rolls a failing
    canary back while a client keeps sending over a real socket, and stops it at shutdown."""
    import threading
    import time

    import uvicorn
    from serving import free_port

    lib = _library(tmp_path, "failing")
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    policy = tmp_path / "policies.yaml"
    policy.write_text("interval: 0.1\ncanary:\n  - {model: mlp, alias: production, window: 60, min_requests: 5}\n")
    app = create_app(
        repository=lib.root, max_batch_size=0, model_options={"trust_code": True}, dashboard=False, policies=policy
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    statuses = []
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        x, _ = models.dataset(1, seed=0)
        body, headers = v2.encode_request({"x": x})
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while lib.alias("mlp", "production") != {1: 1.0}:
                assert time.monotonic() < deadline, "not rolled back"
                r = client.post("/v2/models/mlp/versions/production/infer", content=body, headers=headers)
                statuses.append(r.status_code)
                time.sleep(0.01)
    finally:
        server.should_exit = True
        thread.join(10)
    # Judged after 5 canary requests, looked at every 0.1 s: the failures stay few, whatever the window.
    assert 5 <= statuses.count(500) <= 25
    assert app.policies is not None and not app.policies.running  # stopped with the server
    assert [e.action for e in read_events(lib, "mlp")] == ["rollback"]
