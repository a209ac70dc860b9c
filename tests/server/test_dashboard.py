"""The dashboard's JSON documents and page, through the server app and the ``aimass ui`` app (no browser).

A small real library is built once: ``fraud`` v1 (an ONNX MLP with metrics from its own
predictions and a reference profile), v2 (its fp16 compression, carrying the report) behind a
canary alias with a gate, and ``churn`` v1. Browser tests are in test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import dataset, onnx_mlp

from aimass import Model, charts
from aimass.compress import Report
from aimass.evaluate import Evaluation, check_gate
from aimass.monitor import Monitor, Profile
from aimass.server import create_app
from aimass.server.dashboard import LiveSampler, quantile, ui_app
from aimass.server.metrics import Metrics
from aimass.store import Listing, Store

TOKEN = "s3cret-dashboard"


def _evaluation(model: Model, x: np.ndarray, y: np.ndarray) -> Evaluation:
    """Accuracy of ``model`` on (x, y), measured from its predictions."""
    predicted = model.predict({"x": x})["y"].argmax(axis=1)
    return Evaluation(task="classification", rows=len(y), metrics={"accuracy": float((predicted == y).mean())})


@functools.cache
def build_library(root: Path) -> Path:
    """The shared test library (built once per root and process)."""
    x, y = dataset(256)
    root.parent.mkdir(parents=True, exist_ok=True)
    lib = Store(root)
    mlp = Model.load(onnx_mlp(root.parent / "mlp.onnx"))
    small = mlp.compress("fp16", data=x[:64], repeats=3)
    v1 = lib.publish(mlp, "fraud", metrics=_evaluation(mlp, x, y), reference=x, tags={"owner": "risk"})
    v2 = lib.publish(small, "fraud", metrics=_evaluation(small, x, y))
    lib.set_gate("fraud", "production", {"accuracy": ">=0.1"})
    lib.set_alias("fraud", "production", {v1: 0.9, v2: 0.1})
    lib.publish(Model.load(onnx_mlp(root.parent / "churn.onnx", hidden=4, seed=1)), "churn")
    return root


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIMASS_SERVER_TOKEN", raising=False)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.getbasetemp() / "dashboard-library" / "models")


def get(app: Any, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(call())


@pytest.fixture(scope="module")
def ui(library: Path) -> Any:
    return ui_app(Store(library))


# -- library documents ------------------------------------------------------------------------------


def test_model_list_shows_what_the_library_holds(ui: Any, library: Path) -> None:
    lib = Store(library)
    doc = get(ui, "/dashboard/api/models").json()
    assert [m["name"] for m in doc["models"]] == lib.names() == ["churn", "fraud"]
    fraud = doc["models"][1]
    assert fraud["versions"] == [str(v) for v in lib.versions("fraud")] == ["1", "2"]
    assert fraud["aliases"] == {"production": {"1": 0.9, "2": 0.1}}
    assert fraud["served"] == []  # a library alone serves nothing
    assert all(c.startswith("<svg") for c in doc["charts"])


def test_model_page_shows_aliases_gates_and_canary_chart(ui: Any, library: Path) -> None:
    doc = get(ui, "/dashboard/api/models/fraud").json()
    assert doc["aliases"] == {"production": {"1": 0.9, "2": 0.1}}
    assert doc["gates"] == Store(library).gates("fraud") == {"production": {"accuracy": ">=0.1"}}
    assert [r["version"] for r in doc["versions"]] == ["1", "2"]
    assert "v1 90%" in doc["charts"][0] and "v2 10%" in doc["charts"][0]


def test_version_details_show_schema_metrics_gates_and_report(ui: Any, library: Path) -> None:
    lib = Store(library)
    doc = get(ui, "/dashboard/api/models/fraud/versions/2").json()
    info = lib.info("fraud", 2)
    assert (doc["backend"], doc["size"], doc["created"]) == (info.backend, info.size, info.created)
    assert doc["schema"]["inputs"] == [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}]
    assert doc["metrics"] == info.metrics and doc["evaluation"] == {"task": "classification", "rows": 256}
    assert doc["gates"]["production"]["failures"] == check_gate(info.metrics, {"accuracy": ">=0.1"})
    report = Model.load(lib.path("fraud", 2)).report
    assert isinstance(report, Report) and report.method == "fp16"
    assert doc["report"]["text"] == report.text()
    assert len(doc["report"]["charts"]) >= 3 and 'data-points="2"' in doc["report"]["charts"][0]
    first = get(ui, "/dashboard/api/models/fraud/versions/1").json()
    assert first["report"] is None and first["profile_rows"] == 256 and first["tags"] == {"owner": "risk"}


def test_unknown_model_or_version_is_404_json(ui: Any) -> None:
    for path in ("/dashboard/api/models/nope", "/dashboard/api/models/fraud/versions/9", "/dashboard/api/nothing"):
        r = get(ui, path)
        assert r.status_code == 404 and "error" in r.json()


def test_live_and_drift_need_a_server(ui: Any) -> None:
    r = get(ui, "/dashboard/api/live")
    assert r.status_code == 404 and "aimass serve" in r.json()["error"]


def test_report_persists_through_save_and_load(tmp_path: Path) -> None:
    x, _ = dataset(64)
    small = Model.load(onnx_mlp(tmp_path / "m.onnx")).compress("fp16", data=x, repeats=0)
    loaded = Model.load(small.save(tmp_path / "pkg"))
    assert isinstance(loaded.report, Report)
    assert loaded.report.model_dump() == small.report.model_dump()
    assert Model.load(loaded.save(tmp_path / "again")).report == loaded.report  # kept on re-save


# -- the page, auth, read-only ------------------------------------------------------------------


def test_page_and_files_are_served_with_a_strict_policy(ui: Any) -> None:
    page = get(ui, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "fraud" not in page.text  # the page holds no data: it fetches it
    assert get(ui, "/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    for path in ("/dashboard/static/../catalog.py", "/dashboard/static/nope.js", "/dashboard/static/index.html"):
        assert get(ui, path).status_code == 404


def test_dashboard_is_read_only(ui: Any) -> None:
    for path in ("/", "/dashboard/api/models", "/dashboard/static/dashboard.js"):
        r = get(ui, path, method="POST")
        assert r.status_code == 405 and "read-only" in r.json()["error"]


def test_data_needs_the_bearer_token_when_one_is_set(library: Path) -> None:
    app = create_app(repository=library, auth_token=TOKEN, max_batch_size=0)
    assert get(app, "/dashboard/api/session").json()["auth"] is True
    assert get(app, "/").status_code == 200  # the page itself asks for the token
    for path in ("/dashboard/api/models", "/dashboard/api/models/fraud/versions/1", "/dashboard/api/live"):
        refused = get(app, path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in refused.text
        assert get(app, path, {"Authorization": "Bearer wrong"}).status_code == 401
        assert get(app, path, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    standalone = ui_app(Store(library), token=TOKEN)
    assert get(standalone, "/dashboard/api/models").status_code == 401
    assert get(standalone, "/dashboard/api/models", {"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_v2_routes_are_untouched_and_the_dashboard_can_be_off(library: Path) -> None:
    on = create_app(repository=library, max_batch_size=0)
    assert get(on, "/v2/health/live").status_code == 200
    assert get(on, "/v2/nothing").status_code == 404
    assert get(on, "/metrics").status_code == 200
    off = create_app(repository=library, max_batch_size=0, dashboard=False)
    assert off.dashboard is None and get(off, "/").status_code == 404
    from aimass.cli.options import ServerOptions  # aimass serve --no-dashboard

    assert ServerOptions(dashboard=False).settings().dashboard is False
    assert ServerOptions().settings().dashboard is True


# -- the server: live charts and drift after traffic -----------------------------------------------


def test_live_charts_and_drift_have_data_after_traffic(library: Path) -> None:
    app = create_app(repository=library, max_batch_size=8)
    x, _ = dataset(40, seed=3)

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            (await client.get("/dashboard/api/live")).raise_for_status()  # first look: the sampler starts
            for version, rows in (("1", x[:30]), ("2", x[30:])):
                for row in rows:
                    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row.tolist()}]}
                    (await client.post(f"/v2/models/fraud/versions/{version}/infer", json=body)).raise_for_status()
            bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
            assert (await client.post("/v2/models/fraud/versions/2/infer", json=bad)).status_code == 400
            await asyncio.sleep(0.6)  # past the minimum gap between samples
            live = (await client.get("/dashboard/api/live")).json()
            drift = (await client.get("/dashboard/api/drift")).json()
            model = (await client.get("/dashboard/api/models/fraud")).json()
            return live, drift, model

    live, drift, model = asyncio.run(run())
    rows = {(m["model"], m["version"]): m for m in live["models"]}
    v1, v2 = rows[("fraud", "1")], rows[("fraud", "2")]
    assert (v1["requests"], v2["requests"], v2["errors"]) == (30, 11, 1)
    point = v1["points"][-1]
    assert point["requests_per_s"] > 0 and point["p99_ms"] >= point["p50_ms"] > 0
    assert point["compute_ms"] > 0 and point["batch_rows"] >= 1
    assert v2["points"][-1]["errors_per_s"] > 0
    for name in ("requests", "latency", "queue_compute", "batch", "errors"):
        assert 'data-points="0"' not in live["charts"][name], name
    assert [v["served"] for v in model["versions"]] == [True, True]
    monitored = {(m["model"], m["version"]): m for m in drift["models"]}
    features = monitored[("fraud", "1")]["features"]  # v1 carries the reference profile
    assert [f["feature"] for f in features] == ["x[0]", "x[1]", "x[2]", "x[3]"]
    assert monitored[("fraud", "1")]["window_rows"] == 30 and len(monitored[("fraud", "1")]["charts"]) == 2


def test_sampler_rates_come_from_consecutive_samples() -> None:
    now = [100.0]
    metrics = Metrics()
    live = LiveSampler(metrics.registry, interval=2.0, clock=lambda: now[0])
    live.sample()
    mm = metrics.model("fraud", "3")
    for seconds in (0.002, 0.004, 0.004, 0.2):
        mm.requests.inc()
        mm.request_seconds.observe(seconds)
    mm.failure(500)
    mm.observe_batch(8, [0.001, 0.003], 0.01)
    now[0] += 2.0
    point = live.series(60)["models"][0]["points"][-1]
    assert point["requests_per_s"] == 2.0 and point["errors_per_s"] == 0.5
    assert point["queue_ms"] == pytest.approx(2.0) and point["compute_ms"] == pytest.approx(10.0)
    assert point["batch_rows"] == 8.0
    assert 2.5 <= point["p50_ms"] <= 5.0 and 100.0 <= point["p99_ms"] <= 250.0  # bucket-interpolated


def test_quantile_interpolates_in_buckets() -> None:
    assert quantile(0.5, {0.01: 0.0, 0.02: 4.0, float("inf"): 4.0}) == pytest.approx(0.015)
    assert quantile(0.99, {0.01: 0.0, float("inf"): 5.0}) == 0.01  # the +Inf bucket: the largest bound
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None


# -- charts and notebooks -------------------------------------------------------------------------


def test_charts_escape_labels_and_skip_missing_values() -> None:
    svg = charts.bars({"<script>alert(1)</script>": 1.0, "nan": float("nan")}, title="a & b")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'data-points="1"' in svg
    line = charts.lines({"m": [(-4.0, 1.0), (-2.0, None), (0.0, 2.0)]}, title="t")
    assert line.count("<circle") == 2 and "<polyline" not in line  # the gap splits the line
    assert 'data-points="0"' in charts.lines({}, title="empty")


def test_reports_and_listings_render_charts_in_notebooks(library: Path) -> None:
    lib = Store(library)
    listing = lib.listing()
    assert isinstance(listing, Listing) and listing._repr_html_().count("<svg") >= 2
    report = Model.load(lib.path("fraud", 2)).report
    assert report._repr_html_().count("<svg") >= 3  # size, latency, drift (and recipes when searched)
    assert "<svg" in Evaluation(task="classification", rows=3, metrics={"accuracy": 0.5})._repr_html_()
    x, _ = dataset(200)
    schema = Model.load(lib.path("fraud", 1)).schema
    monitor = Monitor(schema, Profile.from_data(schema, x))
    monitor.observe({"x": x[:50] + 3.0}, 0.001)
    html = monitor.report()._repr_html_()
    assert html.count("<svg") == 2 and 'class="threshold"' in html


def test_ui_command_is_registered_and_refuses_a_missing_root(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aimass.cli import app, commands

    application = app()
    assert "ui" in [name for name, _ in commands(application)]
    result = CliRunner().invoke(application, ["ui", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no library directory" in result.output
