"""How many model versions a server keeps loaded, and how their memory is counted.

A :class:`Budget` caps the model versions loaded at once (``max_loaded_models``), their memory
(``memory_budget``, bytes), or both; 0 means no cap. With a budget the repository loads a model
version on its first request and unloads the least recently used one when the next would not fit
(:class:`aimass.server.repository.Repository`).

A version's memory is measured once, when it loads: the growth of the process's resident set
across the load and its warm-up (loads run one at a time, so the growth is that model's), and
never less than the size of its package's artifacts. The floor matters because the allocator
reuses pages that an evicted model freed, so a reload can show no growth at all; the RSS growth
matters because a framework's memory (prepacked weights, arenas, a traced graph) can be several
times the file.

Example:
    >>> b = Budget(max_loaded_models=3, memory_budget=8 * 1024**3)
    >>> b.fits(models=3, memory=1024), b.fits(models=4, memory=1024)
    (True, False)
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
from pathlib import Path
from typing import Any

from aimass.package import is_package, read_manifest

__all__ = ["Budget", "growth_since", "package_bytes", "release_memory", "resident_bytes"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """Caps on what stays loaded: model versions and bytes (0: no cap on that one).

    Example:
        >>> Budget(max_loaded_models=3).enabled
        True
    """

    max_loaded_models: int = 0
    memory_budget: int = 0

    def __post_init__(self) -> None:
        if self.max_loaded_models < 0:
            raise ValueError(f"max_loaded_models must be >= 0 (0: no cap), got {self.max_loaded_models}")
        if self.memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0 bytes (0: no cap), got {self.memory_budget}")

    @property
    def enabled(self) -> bool:
        """True when anything is capped (then models load on demand)."""
        return bool(self.max_loaded_models or self.memory_budget)

    def fits(self, models: int, memory: int) -> bool:
        """Whether ``models`` loaded versions holding ``memory`` bytes stay within the caps."""
        if self.max_loaded_models and models > self.max_loaded_models:
            return False
        return not (self.memory_budget and memory > self.memory_budget)

    def describe(self) -> str:
        """``"3 models, 8.0 GiB"``: the caps in words, for messages."""
        parts = []
        if self.max_loaded_models:
            parts.append(f"{self.max_loaded_models} models")
        if self.memory_budget:
            parts.append(f"{self.memory_budget / 1024**3:.3g} GiB")
        return ", ".join(parts) or "no cap"


def resident_bytes() -> int:
    """This process's resident set size in bytes (0 where it cannot be read).

    Example:
        >>> resident_bytes() > 0
        True
    """
    try:
        import psutil  # optional: the most portable reading

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def growth_since(before: int, collect: bool = True) -> int:
    """Resident bytes gained since ``before``, once freed memory went back (:func:`release_memory`).

    ``collect=False`` only trims: what a load keeps, not the file bytes and parse buffers it freed.

    Example:
        >>> before = resident_bytes(); model = load(); growth_since(before, collect=False)   # doctest: +SKIP
    """
    release_memory(collect=collect)
    return max(resident_bytes() - before, 0)


def release_memory(collect: bool = True) -> None:
    """Collect garbage (``collect``) and hand freed heap pages back to the system (glibc ``malloc_trim``).

    Backends hold reference cycles (a bound method of their own), and a model that served a while
    sits in the oldest generation, so only a full collection frees an evicted one. Without the trim,
    the memory it freed stays in the allocator's arenas: reused by the next load, but resident, so
    the process would not shrink after evictions. The first call freezes the objects then alive
    (``gc.freeze``), as pre-forking servers do, so that each later collection is quick.
    """
    if collect:
        _freeze_startup_objects()
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _freeze_startup_objects() -> None:
    # A full collection walks every tracked object: 80 ms in a process that imported onnx and
    # pydantic, for every load. Freezing what is alive at the first load (imports, the server
    # itself) leaves the collections only what came later: models, requests. Once per process.
    gc.collect()
    gc.freeze()


@functools.cache
def _malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def package_bytes(source: object) -> int:
    """Bytes of a model's files: a package's artifacts (from its manifest) or a file's size; 0 otherwise.

    Example:
        >>> package_bytes("models/fraud/3")   # doctest: +SKIP
        4194632
    """
    if not isinstance(source, Path):
        return 0
    try:
        if is_package(source):
            return sum(a.size for a in read_manifest(source).artifacts)
        return source.stat().st_size if source.is_file() else 0
    except Exception:  # an unreadable manifest fails later, at load, with its own error
        return 0
