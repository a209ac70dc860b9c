"""The shipped alert rules and dashboard name only metrics a running server exports, and the rules
are a valid Prometheus rule file (structure, and PromQL syntax when promql-parser is installed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app as cli_app
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.alerts import dashboard, metric_names, rules
from aimass.server.canary import CanaryPolicy
from aimass.server.policies import Policies, PolicyRunner
from aimass.store import Store

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def _exported(tmp: Path) -> tuple[set[str], set[str]]:
    """(series a served library declares, series that have samples) after a few requests: good ones,
    a bad one (400), drifted ones (a profiled model) and mirrored ones (a shadow rule), with policies on."""
    lib = Store(tmp / "lib")
    x, _ = models.dataset(300, seed=0)
    mlp = Model.load(models.onnx_mlp(tmp / "mlp.onnx"))
    lib.publish(mlp, "mlp", reference=x, alias="production")
    lib.publish(mlp, "mlp")
    lib.set_alias("mlp", "production", {1: 0.5, 2: 0.5})
    app = create_app(repository=lib.root, max_batch_size=0, shadow=["mlp@production=2"], dashboard=False)
    policies = Policies(canary=[CanaryPolicy(model="mlp", alias="production")])
    runner = PolicyRunner(policies, app.repository, registry=app.metrics.registry)

    async def main() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for rows in np.array_split(x[:100] + 3.0, 20):  # far from the reference: drift
                body, headers = v2.encode_request({"x": rows})
                r = await client.post("/v2/models/mlp/versions/production/infer", content=body, headers=headers)
                assert r.status_code == 200, r.text
            body, headers = v2.encode_request({"x": np.zeros((2, 5), np.float32)})  # the wrong shape: 400
            r = await client.post("/v2/models/mlp/versions/1/infer", content=body, headers=headers)
            assert r.status_code == 400
            await app.shadow.drain()  # type: ignore[union-attr]
            await runner.tick()
            await runner.tick()
            return (await client.get("/metrics")).text

    declared, sampled = set(), set()
    for family in text_string_to_metric_families(asyncio.run(main())):
        declared |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        sampled |= {s.name for s in family.samples}
    return declared, sampled


def test_every_metric_the_rules_and_dashboard_name_is_exported(tmp_path: Path) -> None:
    declared, sampled = _exported(tmp_path)
    named = metric_names()
    assert len(named) >= 15
    assert named <= declared, f"not exported: {sorted(named - declared)}"
    # The series the main alerts fire on carry samples after this traffic, not just a declaration.
    for name in (
        "aimass_requests_total",
        "aimass_request_failures_total",
        "aimass_request_seconds_bucket",
        "aimass_input_drift_psi",
        "aimass_canary_weight",
        "aimass_canary_error_rate_delta",
        "aimass_shadow_rows_total",
    ):
        assert name in named and name in sampled, name


def test_a_misspelled_metric_would_be_caught(tmp_path: Path) -> None:
    declared, _ = _exported(tmp_path)
    assert "aimass_request_failure_total" not in declared and "aimass_request_failures_total" in declared


def test_rules_are_a_prometheus_rule_file() -> None:
    doc = yaml.safe_load(rules())
    assert set(doc) == {"groups"}
    alerts = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and rule["alert"].isidentifier()
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert rule["for"][:-1].isdigit() and rule["for"][-1] in "smhd"
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            assert {"summary", "description"} <= set(rule["annotations"])
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)) >= 8
    promql = pytest.importorskip("promql_parser")  # in requirements/dev.in; the checks above run without it
    for group in doc["groups"]:
        for rule in group["rules"]:
            promql.parse(rule["expr"])
    for panel in json.loads(dashboard())["panels"]:
        for target in panel["targets"]:
            promql.parse(target["expr"])


def test_dashboard_is_grafana_json() -> None:
    doc = json.loads(dashboard())
    assert doc["uid"] == "aimass-server" and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["title"] for p in doc["panels"])


def test_cli_prints_them() -> None:
    runner = CliRunner()
    out = runner.invoke(cli_app(), ["alerts", "rules"])
    assert out.exit_code == 0 and out.output == rules()
    out = runner.invoke(cli_app(), ["alerts", "dashboard"])
    assert out.exit_code == 0 and json.loads(out.output)["uid"] == "aimass-server"
