"""The file ``aimass scale config`` writes, deployed as ``serve deploy`` deploys it, serves the same V2 API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_written_config_deploys_and_serves(ray_cluster: Any, serve_port: int, mlp: Model, scale_tmp: Path) -> None:
    import yaml
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    package = mlp.save(scale_tmp / "config-pkg", overwrite=True)
    out = scale_tmp / "serve.yaml"
    args = ["scale", "config", f"mlp={package}", "--host", "127.0.0.1", "--port", str(serve_port), "-o", str(out)]
    result = CliRunner().invoke(app(), [*args, "--num-cpus", "0.5", "--max-batch-size", "16"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    config["http_options"]["host"] = "127.0.0.1"  # the session's Serve instance listens on loopback
    config["applications"][0]["route_prefix"] = "/fromfile"
    # What `serve deploy serve.yaml` does through the dashboard's REST API, without the dashboard.
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})  # a no-op when a test before started it
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
    try:
        x = np.ones((3, 4), np.float32)
        remote = Model.load(f"http://127.0.0.1:{serve_port}/fromfile/v2/models/mlp")
        np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-5, atol=1e-5)
    finally:
        serve.delete("aimass")
