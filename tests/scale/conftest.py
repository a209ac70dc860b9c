"""One local Ray cluster (2 CPUs) and one Ray Serve instance for every test under tests/scale/.

Ray takes seconds to start on 2 cores, so the cluster is shared by the whole session and shut
down at its end (serve.shutdown, then ray.shutdown) so the test process exits cleanly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import pytest
import serving

from aimass import Model


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Direct-ingress replicas stay up 30 s after they are told to stop, for HAProxy to stop sending
    # them requests; on one machine it learns that within a second or two, and tests scale down.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5")
    from aimass.scale import connect

    started = not ray.is_initialized()
    # A short private directory for Ray's sessions, logs and sockets (Unix socket paths are limited to ~107 bytes).
    temp_dir = tempfile.mkdtemp(prefix="aimray-")
    connect(num_cpus=2, log_to_driver=False, include_dashboard=False, _temp_dir=temp_dir)
    yield ray
    from ray import serve

    serve.shutdown()
    if started:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_port(ray_cluster: Any) -> int:
    """Ray Serve's HTTP proxy port (the first aimass.scale.deploy call starts Serve on it)."""
    return serving.free_port()


@pytest.fixture(scope="session")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("scale") / "mlp.onnx"))


@pytest.fixture(scope="session")
def scale_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale-data")
