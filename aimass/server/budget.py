"""How many model versions a server keeps loaded, and how their memory is counted.

A :class:`Budget` caps the model versions loaded at once (``max_loaded_models``), their memory
(``memory_budget``, bytes), or both; 0 means no cap. With a budget the registry loads a model
version on its first request (:class:`aimass.server.registry.Registry`), and :class:`Residency`
unloads the least recently used one when the next would not fit: an idle one when there is one,
else a busy one, which stops taking requests at once and stays counted (draining) until its
running requests finish, so no request fails because its model was unloaded, and the budget holds.

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

import asyncio
import dataclasses
import functools
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aimass.errors import ServiceUnavailable
from aimass.package import is_package, read_manifest

__all__ = ["Budget", "Held", "Residency", "growth_since", "package_bytes", "release_memory", "resident_bytes"]

Key = tuple[str, str]  # (model name, version)


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


class Held(Protocol):
    """A loaded model version as the budget sees it (:class:`aimass.server.served.ServedModel`)."""

    name: str
    version: str
    users: int  # requests holding it now
    last_used: int  # a tick: higher is more recent
    memory: int  # bytes it is counted for
    pinned: bool  # never evicted
    drained: asyncio.Future[None] | None  # set when evicted while busy: done once its users are gone


class Residency:
    """What a server holds against its :class:`Budget`, and which version goes when room is needed.

    Held are the loaded versions (``loaded()``), the loads under way (:attr:`loading`, with their
    estimated bytes) and the versions unloaded while requests still ran on them (:attr:`draining`).
    ``evict(version, reason)`` takes a version out of service; ``counted(versions, bytes)`` hears
    every change of the totals (the metrics' gauges).

    Example:
        >>> r = Residency(Budget(max_loaded_models=1), loaded=list, evict=print, counted=print)
        >>> r.usage()
        (0, 0)
    """

    def __init__(
        self,
        budget: Budget,
        *,
        loaded: Callable[[], list[Any]],
        evict: Callable[[Any, str], None],
        counted: Callable[[int, int], None],
        retry_after: int = 1,
    ) -> None:
        self.budget = budget
        self.loading: dict[Key, int] = {}
        self.draining: list[Any] = []
        self.peak_loaded = 0  # the most versions held at once (loaded + loading + draining)
        self.evicted_since_collect = False  # an eviction since the last full collection (see release_memory)
        self._loaded = loaded
        self._evict = evict
        self._counted = counted
        self._retry_after = retry_after
        self._tick = 0

    def touch(self, held: Held) -> None:
        """``held`` was used now (least recently used goes first)."""
        self._tick += 1
        held.last_used = self._tick

    def usage(self) -> tuple[int, int]:
        """(versions, bytes) held: loaded, loading and draining."""
        held = self._loaded() + self.draining
        return len(held) + len(self.loading), sum(h.memory for h in held) + sum(self.loading.values())

    def count(self) -> None:
        """Tell ``counted`` the totals now (after any change)."""
        count, used = self.usage()
        self.peak_loaded = max(self.peak_loaded, count)
        self._counted(count, used)

    def retired(self, held: Held) -> None:
        """``held`` left service: it drains when requests still hold it (from the event loop)."""
        self.evicted_since_collect = True
        if held.users > 0:
            try:
                held.drained = asyncio.get_running_loop().create_future()
            except RuntimeError:  # unloaded from outside the loop: nothing can wait on it
                held.drained = None
            else:
                self.draining.append(held)
        self.count()

    def release(self, held: Held) -> None:
        """A request is done with ``held``; the last one out of a draining version frees it."""
        held.users -= 1
        if held.users == 0 and held.drained is not None and not held.drained.done():
            if held in self.draining:
                self.draining.remove(held)
            held.drained.set_result(None)
            self.count()

    async def make_room(self, models: int, memory: int, key: Key) -> None:
        """Evict least recently used versions (never ``key``, never pinned) until ``models`` / ``memory`` more fit.

        Waits for a draining version when only busy ones are left; ServiceUnavailable (503) when
        nothing can go.
        """
        while True:
            count, used = self.usage()
            if self.budget.fits(count + models, used + memory):
                return
            victim = self._victim(idle=True, keep=key)
            if victim is None and self.draining:
                # Only busy versions are left: wait for an evicted one to finish its requests.
                await asyncio.wait([h.drained for h in self.draining if h.drained], return_when="FIRST_COMPLETED")
                continue
            victim = victim or self._victim(idle=False, keep=key)
            if victim is None:
                raise ServiceUnavailable(
                    f"no room to load model {key[0]!r} version {key[1]!r} within the budget "
                    f"({self.budget.describe()}): {count} versions held, pinned or loading",
                    retry_after=self._retry_after,
                )
            self._evict(victim, f"evicted (least recently used; budget {self.budget.describe()})")

    def _victim(self, *, idle: bool, keep: Key) -> Any:
        candidates = [
            h for h in self._loaded() if not h.pinned and (h.users == 0) == idle and (h.name, h.version) != keep
        ]
        return min(candidates, key=lambda h: h.last_used, default=None)


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
