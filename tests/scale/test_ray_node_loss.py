"""Node loss under load: a worker node's raylet killed on a 3-node Ray cluster, no request fails.

The cluster (a CPU-less head and two 1-CPU workers, ``ray.cluster_utils.Cluster``) runs in its own
process (:mod:`helpers.ray_node_loss`): a process joins one Ray cluster, and this session's tests
share another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_node_loses_no_request(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tests = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "helpers.ray_node_loss", str(tmp_path)],
        cwd=tests,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(result)  # sent, ok, resent, recovery_s: shown with -s
    assert result["replicas_lost"] >= 1
    assert result["recovered"], result
    assert result["failures"] == [], result
    assert result["ok"] == result["sent"] > 50
