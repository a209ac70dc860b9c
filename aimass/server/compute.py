"""How a server uses its cores: model calls at once per model (``instances``) and threads per call.

The server runs up to ``instances`` model calls at once per model (merged batches, Triton's
instance count). onnxruntime and torch each give one call a pool of as many threads as the
machine has cores, and their threads spin while they wait for work: two calls at once on two
cores then run four busy threads, plus the event loop that reads requests. The default here
gives each call ``cores // instances`` threads (at least one), so the calls that may run at once
together use the cores once; the event loop takes its share between them. Measured on the real
all-MiniLM-L6-v2 on 2 cores: docs/performance.md.

Backends that can limit their threads declare it (:mod:`aimass.backends.threads`); a choice
made at load (``--option session_options.intra_op_num_threads=N``) stands, and a ``Model`` handed
to ``create_app`` is served as it is: the plan applies to the models the server loads itself.

Example:
    >>> plan = plan_compute(instances=2, cores=2)
    >>> plan.threads
    1
    >>> plan.describe()
    'compute: 2 cores; up to 2 model calls at once per model (--instances), 1 thread each (--call-threads)'
"""

from __future__ import annotations

import dataclasses
import os

__all__ = ["ComputePlan", "available_cores", "plan_compute"]


@dataclasses.dataclass(frozen=True)
class ComputePlan:
    """Cores, model calls at once per model, and threads per call (0: the frameworks' own default)."""

    cores: int
    instances: int
    threads: int

    def describe(self) -> str:
        """One line for the server's start."""
        each = f"{self.threads} thread{'s' if self.threads != 1 else ''} each" if self.threads else "framework threads"
        return (
            f"compute: {self.cores} cores; up to {self.instances} model calls at once per model (--instances), "
            f"{each} (--call-threads)"
        )


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_compute(instances: int, call_threads: int = 0, cores: int | None = None) -> ComputePlan:
    """The plan for ``instances`` calls at once: ``call_threads`` threads each, or (0) ``cores // instances``.

    Example:
        >>> plan_compute(instances=1, cores=8).threads
        8
    """
    cores = cores or available_cores()
    threads = call_threads or max(1, cores // max(1, instances))
    return ComputePlan(cores=cores, instances=instances, threads=threads)
