"""CPU placement on a Ray cluster: fit replicas and actors to the CPUs there are, or refuse at once.

Ray waits forever for CPUs it does not have: four replicas of 1 CPU on a 2-CPU cluster never start,
and Ray Data's actors can take every CPU its read tasks need. So before asking Ray, aimass checks
what the cluster has free and either fits the request (when the CPUs per replica or actor were left
to it: a fraction of a CPU each on a small cluster) or raises :class:`~aimass.errors.PlacementError`
naming the CPUs asked for and the CPUs there are.

Example:
    >>> fit_cpus(4, None, free=2.0, total=2.0, what="4 replicas")
    0.5
    >>> try:
    ...     fit_cpus(4, 1.0, free=2.0, total=2.0, what="4 replicas")
    ... except PlacementError as e:
    ...     print(str(e).split(";")[0])
    4 replicas x 1 CPU = 4 CPUs asked
"""

from __future__ import annotations

import math
import time

from aimass.errors import PlacementError
from aimass.scale.cluster import ray_module

__all__ = ["MIN_CPUS", "cluster_cpus", "fit_cpus"]

#: The smallest share of a CPU aimass gives a replica or an actor by itself (below it, refuse).
MIN_CPUS = 0.05


def cluster_cpus(want: float = 0.0, wait: float = 5.0) -> tuple[float, float]:
    """``(free, total)`` CPUs of the connected Ray cluster, waiting up to ``wait`` s while fewer than ``want`` are free.

    Ray returns the CPUs of actors that just ended (a finished Ray Data job, replicas being
    replaced) a moment later: without the wait, a cluster about to be idle reads as full.

    Example:
        >>> cluster_cpus(want=2)   # doctest: +SKIP
        (2.0, 2.0)
    """
    ray = ray_module()
    deadline = time.monotonic() + wait
    while True:
        total = float(ray.cluster_resources().get("CPU", 0.0))
        free = float(ray.available_resources().get("CPU", 0.0))
        if free + 1e-9 >= min(want, total) or time.monotonic() > deadline:
            return free, total
        time.sleep(0.2)


def _cpus(n: float) -> str:
    return f"{n:g} CPU" if n == 1 else f"{n:g} CPUs"


def fit_cpus(count: int, num_cpus: float | None, *, free: float, total: float, what: str, room: str = "free") -> float:
    """The CPUs each of ``count`` replicas/actors reserves: ``num_cpus``, or a fitting share when None.

    ``free`` is what the request may use (free CPUs plus those the same deployment holds now);
    ``what`` names the request in the error ("4 replicas of 'aimass'"), ``room`` what ``free`` is.
    A share is at most 1 CPU, rounded down to 0.01; below :data:`MIN_CPUS` it is refused.

    Example:
        >>> fit_cpus(3, None, free=2.0, total=2.0, what="3 actors")
        0.66
    """
    if count < 1:
        raise ValueError(f"{what}: the count must be >= 1, got {count}")
    if num_cpus is None:
        share = min(1.0, math.floor(free / count * 100) / 100)
        if share >= MIN_CPUS:
            return share
        raise PlacementError(
            f"{what} need at least {_cpus(MIN_CPUS)} each ({_cpus(round(count * MIN_CPUS, 2))}); "
            f"the Ray cluster has {free:g} of its {_cpus(total)} {room}. Ask for fewer, or add nodes"
        )
    if num_cpus < 0:
        raise ValueError(f"{what}: num_cpus must be >= 0, got {num_cpus}")
    asked = count * num_cpus
    if asked <= free + 1e-9:
        return num_cpus
    share = math.floor(free / count * 100) / 100
    hint = f", or for {_cpus(share)} each" if share >= MIN_CPUS else ""
    raise PlacementError(
        f"{what} x {_cpus(num_cpus)} = {_cpus(round(asked, 2))} asked; the Ray cluster has "
        f"{free:g} of its {_cpus(total)} {room}. Ask for fewer{hint}, or add nodes"
    )
