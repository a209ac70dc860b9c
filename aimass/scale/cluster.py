"""Connecting to Ray: an existing cluster (``RAY_ADDRESS``) or a local one started on demand.

Example:
    >>> ray = connect(num_cpus=2)    # local cluster unless RAY_ADDRESS points at one   # doctest: +SKIP
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from aimass.dependencies import require

__all__ = ["connect", "ray_module"]


def ray_module(name: str = "ray") -> ModuleType:
    """Import ``ray`` (or ``ray.serve``/``ray.data``), or raise BackendUnavailable naming the ``[ray]`` extra."""
    return require(name, feature="scale-out on Ray", extra="ray", package="ray")


def connect(**init_options: Any) -> ModuleType:
    """``ray.init`` once per process; returns the ``ray`` module.

    With ``RAY_ADDRESS`` set (``ray://head:10001`` or ``auto``) Ray joins that cluster; otherwise it
    starts a local one with ``init_options`` (e.g. ``num_cpus=2``). Already connected: a no-op.
    """
    ray = ray_module()
    if not ray.is_initialized():
        init_options.setdefault("include_dashboard", False)
        ray.init(**init_options)
    return ray
