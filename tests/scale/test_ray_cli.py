"""``aimass scale predict`` and ``aimass scale deploy`` against the session's Ray cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app

pytestmark = pytest.mark.ray


def test_scale_predict_writes_parquet(ray_cluster: Any, mlp: Model, scale_tmp: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    rows = np.random.default_rng(3).standard_normal((1500, 4)).astype(np.float32)
    pd.DataFrame(rows, columns=["a", "b", "c", "d"]).assign(id=np.arange(1500)).to_csv(
        scale_tmp / "cli.csv", index=False
    )
    package = mlp.save(scale_tmp / "cli-pkg")
    result = CliRunner().invoke(
        app(),
        [
            "scale", "predict", str(package), str(scale_tmp / "cli.csv"), str(scale_tmp / "cli-out"),
            "--batch-size", "400", "--num-cpus", "0.5", "--column", "x=a,b,c,d", "--keep", "id", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(scale_tmp / "cli-out").to_pandas().sort_values("id")
    np.testing.assert_allclose(np.stack(table["y"].to_numpy()), mlp.predict(rows)["y"], rtol=1e-5, atol=1e-5)


def test_scale_deploy_joins_the_cluster_and_stops_its_app(
    ray_cluster: Any, serve_port: int, mlp: Model, scale_tmp: Path
) -> None:
    package = mlp.save(scale_tmp / "serve-pkg", overwrite=True)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    aimass = str(Path(sys.executable).parent / "aimass")
    # Server options are those of `aimass serve` (aimass.cli.options.ServerOptions).
    cmd = [aimass, "scale", "deploy", f"mlp={package}", "--port", str(serve_port), "--max-queue-size", "64"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        for line in proc.stdout:
            if "aimass on Ray Serve at " in line:
                url = line.split(" at ", 1)[1].split("/v2", 1)[0]
                break
            assert time.monotonic() < deadline
        assert url, "no URL printed"
        x = np.ones((2, 4), np.float32)
        remote = Model.load(f"{url}/v2/models/mlp")
        np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-5, atol=1e-5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    from ray import serve

    assert "aimass" not in serve.status().applications
    assert httpx.get(f"{url}/v2/health/ready").status_code == 404
