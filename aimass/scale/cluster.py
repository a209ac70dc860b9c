"""Connecting to Ray: an existing cluster (``RAY_ADDRESS``) or a local one started on demand.

Example:
    >>> ray = connect(num_cpus=2)    # local cluster unless RAY_ADDRESS points at one   # doctest: +SKIP
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from aimass.dependencies import require

__all__ = ["connect", "local_cluster", "ray_module"]

# Whether connect() started the cluster in this process (a local one), rather than joining one.
_started_here = False


def ray_module(name: str = "ray") -> ModuleType:
    """Import ``ray`` (or ``ray.serve``/``ray.data``), or raise BackendUnavailable naming the ``[ray]`` extra."""
    return require(name, feature="scale-out on Ray", extra="ray", package="ray")


def connect(**init_options: Any) -> ModuleType:
    """``ray.init`` once per process; returns the ``ray`` module.

    With ``RAY_ADDRESS`` set (``ray://head:10001`` or ``auto``) Ray joins that cluster; otherwise it
    starts a local one with ``init_options`` (e.g. ``num_cpus=2``). Already connected: a no-op.
    """
    global _started_here
    ray = ray_module()
    if not ray.is_initialized():
        init_options.setdefault("include_dashboard", False)
        ray.init(**init_options)
        _started_here = not os.environ.get("RAY_ADDRESS") and "address" not in init_options
    return ray


def local_cluster() -> bool:
    """Whether :func:`connect` started the cluster here (on this machine alone) rather than joining one.

    Example:
        >>> local_cluster()   # before any connect()
        False
    """
    return _started_here
