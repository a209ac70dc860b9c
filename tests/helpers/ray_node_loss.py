"""Node loss under load on a several-node Ray cluster on one machine, run in its own process.

A head without CPUs (Serve's controller and HAProxy) and two worker nodes of 1 CPU; two replicas
of 0.5 CPU through aimass.scale.deploy; client threads send distinct rows and check every answer
against the local model, with the remote client's ``resend`` on (inference is idempotent). One
worker node that holds a replica is killed (its raylet and workers, no drain); the run goes on
until Ray Serve has two replicas running again, then a moment longer. Prints one JSON document:
sent, ok, failures, resent (inferences sent again), recovery_s (kill -> two replicas running).

Run:  cd tests && python -m helpers.ray_node_loss WORKDIR
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ONE_THREAD = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}


def replica_nodes(app: str) -> dict[str, str]:
    """Running replica actor id -> node id, for the replicas of ``app`` (from Serve's own details)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client()
    assert client is not None
    details = ServeInstanceDetails(**client.get_serve_details()).applications.get(app)
    if details is None:
        return {}
    return {
        r.actor_id: r.node_id
        for d in details.deployments.values()
        for r in d.replicas
        if str(r.state).endswith("RUNNING") and r.actor_id and r.node_id
    }


def main(workdir: Path) -> dict[str, Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    import models
    import ray
    import serving

    # HAProxy's metrics and stats ports are fixed (9101, 8404): another cluster on this machine (the
    # test session's) may hold them. RAY_SERVE_* variables set here travel to the Serve controller.
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(serving.free_port())
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(serving.free_port())
    from ray.cluster_utils import Cluster

    from aimass import Model
    from aimass.scale import deploy

    local = Model.load(models.onnx_mlp(workdir / "mlp.onnx"), options=ONE_THREAD)
    temp_dir = tempfile.mkdtemp(prefix="aimnode-")  # short: Unix socket paths are limited to ~107 bytes
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "temp_dir": temp_dir},
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        svc = deploy({"mlp": local}, num_replicas=2, num_cpus=0.5, port=serving.free_port(), model_options=ONE_THREAD)
        before = replica_nodes(svc.name)
        victim = next(w for w in workers if w.node_id in before.values())
        lock = threading.Lock()
        stats: dict[str, Any] = {"sent": 0, "ok": 0, "failures": [], "resent": 0}
        stop = threading.Event()

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            remote = Model.load(f"{svc.url}/v2/models/mlp", options={"retries": 5, "resend": 10, "timeout": 30})
            while not stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
                with lock:
                    stats["sent"] += 1
                try:
                    got = remote.predict(x)["y"]
                    good = np.allclose(got, local.predict(x)["y"], rtol=1e-5, atol=1e-5)
                except Exception as e:  # every failure is recorded: none may happen
                    with lock:
                        stats["failures"].append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    if good:
                        stats["ok"] += 1
                    else:
                        stats["failures"].append(f"wrong answer for {x.tolist()}")
            with lock:
                stats["resent"] += remote.backend.resent

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        lost = [a for a, n in before.items() if n == victim.node_id]
        deadline = killed_at + 120
        while True:
            now = replica_nodes(svc.name)
            back = len(now) == 2 and not set(lost) & set(now) and svc.replicas() == 2
            if back or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        recovery = time.monotonic() - killed_at
        time.sleep(2.0)  # and serving on the new replica
        stop.set()
        for t in threads:
            t.join(60)
        stats.update(
            recovered=back,
            recovery_s=round(recovery, 1),
            replicas_lost=len(lost),
            ingress=svc.ingress,
        )
        stats["failures"] = stats["failures"][:5] + (
            [f"... {len(stats['failures'])} in all"] if stats["failures"] else []
        )
        return stats
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
