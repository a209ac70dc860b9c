"""``aimass scale config``: a Ray Serve config file and a KubeRay RayService, checked by Ray's own schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimass.cli import app


def _write(args: list[str]) -> None:
    result = CliRunner().invoke(app(), ["scale", "config", *args])
    assert result.exit_code == 0, result.output


def test_serve_config_is_valid_for_ray_and_keeps_no_secret(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    schema = pytest.importorskip("ray.serve.schema")
    out = tmp_path / "serve.yaml"
    _write([
        "fraud=/models/fraud", "http://10.0.0.7:8000/v2/models/mlp", "--replicas", "3", "--num-cpus", "0.5",
        "--max-batch-size", "32", "--max-queue-delay", "2ms", "--auth-token", "s3cret", "-o", str(out),
    ])  # fmt: skip
    text = out.read_text()
    assert "s3cret" not in text  # replicas read AIMASS_SERVER_TOKEN from their own environment
    config = schema.ServeDeploySchema.model_validate(yaml.safe_load(text))
    (application,) = config.applications
    assert application.import_path == "aimass.scale.deploy:build_app"
    assert application.args["models"] == {"fraud": "/models/fraud", "mlp": "http://10.0.0.7:8000/v2/models/mlp"}
    assert application.args["settings"] == {"max_batch_size": 32, "max_queue_delay": 0.002}
    (deployment,) = application.deployments
    assert (deployment.num_replicas, deployment.ray_actor_options.num_cpus) == (3, 0.5)
    assert (config.http_options.host, config.http_options.port) == ("0.0.0.0", 8000)
    env = config.controller_options.runtime_env["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"

    _write(["/models/fraud", "--min-replicas", "1", "--max-replicas", "4", "--ingress", "proxy", "-o", str(out)])
    config = schema.ServeDeploySchema.model_validate(yaml.safe_load(out.read_text()))
    auto = config.applications[0].deployments[0].autoscaling_config
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 4)
    assert config.controller_options is None  # Ray's defaults: nothing to set


def test_rayservice_wraps_the_same_config(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    schema = pytest.importorskip("ray.serve.schema")
    out = tmp_path / "rayservice.yaml"
    _write(["/models/fraud", "--replicas", "2", "--rayservice", "fraud", "--image", "me/aimass:1", "-o", str(out)])
    manifest = yaml.safe_load(out.read_text())
    assert (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]) == (
        "ray.io/v1",
        "RayService",
        "fraud",
    )
    config = schema.ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    assert config.applications[0].deployments[0].num_replicas == 2
    cluster = manifest["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"  # every node's processes start in the same mode
    assert env["AIMASS_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "aimass-token"
    assert worker["image"] == "me/aimass:1"
    result = CliRunner().invoke(app(), ["scale", "config", "/models/fraud", "--rayservice", "fraud"])
    assert result.exit_code != 0 and "--image" in result.output
