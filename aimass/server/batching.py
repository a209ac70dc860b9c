"""Dynamic batching: concurrent requests merged along axis 0 into one model call, split back after.

Knobs keep Triton's names: ``max_batch_size`` (rows per merged call) and ``max_queue_delay``
(seconds the first queued request may wait for company; 0 means "take whatever queued up while
the previous batch ran", which costs nothing at low load and batches well at high load). Requests
merge only when their non-batch dimensions agree; a request larger than ``max_batch_size`` runs
alone. The model runs in a worker thread, so the event loop keeps serving (health checks, other
models) while it computes.

When a merged call fails, its error is logged (logger ``aimass.batching``) and the batch is split in
two halves (of about equal rows) that are retried, recursively, so one bad request among N costs
about ``2 * log2(N)`` extra calls and cannot fail its neighbours. When both halves of a split fail
with the same error (type and message) and so does one request alone, the error does not depend on
the input (a broken model, a lost device) and every request of that batch gets it without further
splitting: a model that fails for every input is called 4 times per merged batch, not once per
request. (Without the lone request, a model that fails on some merged sizes only would fail
requests that succeed alone.)

How requests merge is a :class:`Merging`: :class:`ArrayMerging` (the default) concatenates arrays
along axis 0 and splits the outputs back; :class:`aimass.server.token_batching.TokenMerging`
merges tokenized texts by token count and runs them sorted by length. ``max_batch_cost`` bounds
the sum of a merging's cost per call (tokens for texts; 0: rows only).

Example:
    >>> import asyncio, numpy as np
    >>> b = Batcher(lambda d: {"y": d["x"] * 2}, max_batch_size=8)
    >>> async def two():
    ...     return await asyncio.gather(b.submit({"x": np.ones((1, 2))}), b.submit({"x": np.zeros((2, 2))}))
    >>> [r["y"].shape for r in asyncio.run(two())]
    [(1, 2), (2, 2)]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from aimass.errors import PredictionError

__all__ = ["ArrayMerging", "BatchObserver", "Batcher", "Merging", "Placement"]

log = logging.getLogger("aimass.batching")

Inputs = dict[str, np.ndarray]
# Called once per model call: (rows, queue seconds of each request, compute seconds).
BatchObserver = Callable[[int, list[float], float], None]


class Placement:
    """Where a model call runs: in the executor, or inline on the event loop when it is known to be tiny.

    A thread hop costs tens of microseconds, more than a small model's whole call; blocking the
    loop for that long is harmless. So calls run in the executor until ``warmup`` of them show a
    mean (EMA) below ``inline_below`` seconds, then inline; one slow inline call pushes the mean up
    and sends the following calls back to the executor, so a slow model never stalls the loop
    for long. ``inline_below=0`` always uses the executor.

    Example:
        >>> p = Placement(None, inline_below=0.0002)
        >>> asyncio.run(p.call(sum, [1, 2]))
        3
    """

    def __init__(self, executor: Executor | None, inline_below: float = 0.0002, warmup: int = 16) -> None:
        self.executor = executor
        self.inline_below = inline_below
        self.warmup = warmup
        self.mean = float("inf")
        self.calls = 0

    @property
    def inline(self) -> bool:
        return self.calls >= self.warmup and self.mean < self.inline_below

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - start
            self.mean = took if self.calls == 0 else 0.9 * self.mean + 0.1 * took
            self.calls += 1

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` inline or in the executor, whichever this placement says."""
        if self.inline:
            return self._timed(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._timed, fn, *args)


class Merging(Protocol):
    """How requests merge into one model call and how its outputs go back to each request."""

    def measure(self, request: Any) -> tuple[int, int, Hashable]:
        """``(rows, cost, key)`` of one request: only requests of equal keys merge."""
        ...

    def run(self, fn: Callable[[Any], Inputs], requests: list[Any]) -> list[Inputs]:
        """``fn`` on the merged ``requests`` (one call or more): each request's outputs, in order."""
        ...


class ArrayMerging:
    """Arrays concatenated along axis 0 when everything but the batch dimension agrees; outputs sliced back.

    Example:
        >>> ArrayMerging().run(lambda d: {"y": d["x"] + 1}, [{"x": np.zeros(2)}, {"x": np.ones(1)}])
        [{'y': array([1., 1.])}, {'y': array([2.])}]
    """

    def measure(self, request: Inputs) -> tuple[int, int, Hashable]:
        first = next(iter(request.values()))
        rows = first.shape[0] if first.ndim else 1
        return rows, rows, tuple((k, v.shape[1:], v.dtype.str) for k, v in request.items())

    def run(self, fn: Callable[[Inputs], Inputs], requests: list[Inputs]) -> list[Inputs]:
        if len(requests) == 1:
            return [fn(requests[0])]
        names = requests[0].keys()
        merged = {k: np.concatenate([r[k] for r in requests]) for k in names}
        sizes = [self.measure(r)[0] for r in requests]
        total = sum(sizes)
        outputs = fn(merged)
        for k, v in outputs.items():
            if v.ndim == 0 or v.shape[0] != total:
                raise _Unbatchable(
                    f"output {k!r} has shape {list(v.shape)} for a merged batch of {total} rows: the model does "
                    "not keep the batch on axis 0; serve it with max_batch_size=0"
                )
        results: list[Inputs] = []
        start = 0
        for rows in sizes:
            stop = start + rows
            results.append({k: v[start:stop] for k, v in outputs.items()})
            start = stop
        return results


class _Item:
    __slots__ = ("cost", "future", "inputs", "key", "rows", "t0")

    def __init__(self, inputs: Any, future: asyncio.Future[Inputs], merging: Merging) -> None:
        self.inputs = inputs
        self.future = future
        # Requests merge only when their keys agree (arrays: everything but the batch dimension).
        self.rows, self.cost, self.key = merging.measure(inputs)
        self.t0 = time.perf_counter()


class Batcher:
    """Merge concurrent ``submit`` calls into calls of ``fn`` on up to ``max_batch_size`` rows.

    ``max_concurrency`` merged calls may run at once (Triton's instance count). ``executor``
    runs ``fn`` (default: the event loop's default thread pool), except calls that have proven
    shorter than ``inline_below`` seconds, which run on the loop (see :class:`Placement`).
    ``observer`` receives each call's size and timings (the server feeds its metrics from it).
    ``merging`` says how requests merge (default :class:`ArrayMerging`); ``max_batch_cost`` bounds
    the merged cost per call (0: no bound besides ``max_batch_size`` rows).

    Example:
        >>> b = Batcher(model.backend.run, max_batch_size=64, max_queue_delay=0.001)   # doctest: +SKIP
        >>> out = await b.submit({"x": rows})                                            # doctest: +SKIP
    """

    def __init__(
        self,
        fn: Callable[[Any], Inputs],
        *,
        max_batch_size: int = 64,
        max_batch_cost: int = 0,
        merging: Merging | None = None,
        max_queue_delay: float = 0.0,
        max_concurrency: int = 1,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        inline_below: float = 0.0002,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay < 0:
            raise ValueError(f"max_queue_delay must be >= 0 seconds, got {max_queue_delay}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_batch_cost < 0:
            raise ValueError(f"max_batch_cost must be >= 0 (0: no bound), got {max_batch_cost}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_batch_cost = max_batch_cost
        self.merging: Merging = merging or ArrayMerging()
        self.max_queue_delay = max_queue_delay
        self.max_concurrency = max_concurrency
        self.executor = executor
        self.observer = observer
        self.placement = Placement(executor, inline_below)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Item] = []
        self._rows = 0
        self._running = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    async def submit(self, inputs: Any) -> Inputs:
        """Queue one request (validated arrays with the batch on axis 0, or what ``merging`` takes); its outputs."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start(loop)
        future: asyncio.Future[Inputs] = loop.create_future()
        item = _Item(inputs, future, self.merging)
        if (
            not self._pending
            and self._running < self.max_concurrency
            and self.max_queue_delay == 0
            and not self.placement.inline
        ):
            # Idle batcher and no delay: run now, skipping the dispatcher's wake-up round trip. Not for
            # a model that runs inline: its call would end before any other request is read, so none
            # would ever merge; queued instead, the dispatcher runs on the loop's next turn and takes
            # every request that arrived in this one (as Triton merges what arrived meanwhile).
            self._running += 1
            await self._run([item])
            return await future
        self._pending.append(item)
        self._rows += item.rows
        assert self._wake is not None
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._dispatch())
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        # A batcher follows the loop it is used from (tests run several loops one after another).
        self._loop = loop
        self._pending, self._rows, self._running = [], 0, 0
        self._wake = asyncio.Event()
        self._task = None

    async def _dispatch(self) -> None:
        # Lives while requests are queued, so an idle batcher leaves no task behind.
        wake = self._wake
        assert wake is not None
        while self._pending:
            if self._running >= self.max_concurrency:
                wake.clear()
                await wake.wait()
                continue
            if self.max_queue_delay > 0 and self._rows < self.max_batch_size:
                remaining = self._pending[0].t0 + self.max_queue_delay - time.perf_counter()
                if remaining > 0:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), remaining)
                    if self._rows < self.max_batch_size and self._pending[0].t0 + self.max_queue_delay > (
                        time.perf_counter()
                    ):
                        continue  # woken by a new request, still under size and time: keep waiting
            batch = self._take()
            self._running += 1
            if self.placement.inline:
                # The call runs on the loop anyway: run it here rather than as a task a turn later.
                await self._run(batch)
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._inflight.add(task)  # a reference, so the task is not collected mid-run
            task.add_done_callback(self._inflight.discard)
        self._task = None

    def _take(self) -> list[_Item]:
        pending = self._pending
        first = pending[0]
        batch, rest, rows, cost = [first], [], first.rows, first.cost
        max_cost = self.max_batch_cost or cost + sum(item.cost for item in pending)
        for item in pending[1:]:
            if item.key == first.key and rows + item.rows <= self.max_batch_size and cost + item.cost <= max_cost:
                batch.append(item)
                rows += item.rows
                cost += item.cost
            else:
                rest.append(item)
        self._pending = rest
        self._rows -= rows
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        try:
            start = time.perf_counter()
            waits = [start - item.t0 for item in batch]
            try:
                results = await self._call(batch)
            except Exception as e:
                if len(batch) == 1:
                    _fail(batch[0].future, e)
                    return
                log.warning(
                    "merged model call of %d requests (%d rows) failed: %s: %s; retrying in halves to isolate it",
                    len(batch),
                    sum(item.rows for item in batch),
                    type(e).__name__,
                    e,
                )
                await self._isolate(batch, e)
                return
            if self.observer is not None:
                self.observer(sum(i.rows for i in batch), waits, time.perf_counter() - start)
            for item, out in zip(batch, results, strict=True):
                _resolve(item.future, out)
        finally:
            self._running -= 1
            if self._wake is not None:
                self._wake.set()

    async def _call(self, batch: list[_Item]) -> list[Inputs]:
        """One model call on ``batch``: each request's outputs, in order."""
        merging = self.merging
        return await self.placement.call(merging.run, self.fn, [item.inputs for item in batch])

    async def _isolate(self, batch: list[_Item], error: Exception) -> None:
        """Answer every request of ``batch``, whose merged call failed with ``error``."""
        batch = [item for item in batch if not item.future.done()]  # callers that went away need no answer
        if isinstance(error, _Unbatchable) or len(batch) <= 1:
            # Unbatchable: the model cannot answer merged batches at all, only calls of one request can.
            for item in batch:
                e = await self._attempt([item])
                if e is not None:
                    _fail(item.future, e)
            return
        failed: list[tuple[list[_Item], Exception]] = []
        for half in _halves(batch):
            e = await self._attempt(half)
            if e is not None:
                failed.append((half, e))
        if len(failed) == 2 and _same_error(failed[0][1], failed[1][1]):
            # Both halves failed alike. Either the model fails whatever runs (a lost device), or the
            # failure depends on the merged size and both halves happened to share it (a model that
            # needs rows in multiples of 3): one request alone tells them apart, for one more call.
            probe = failed[0][0][0]
            e = await self._attempt([probe])
            if e is not None and _same_error(e, failed[0][1]):
                for half, err in failed:
                    for item in half:
                        _fail(item.future, err)
                return
            if e is not None:
                _fail(probe.future, e)
        for half, e in failed:
            if len(half) == 1:
                _fail(half[0].future, e)
            else:
                await self._isolate(half, e)

    async def _attempt(self, batch: list[_Item]) -> Exception | None:
        """Run ``batch`` as one call: resolve its requests, or return the error (nothing failed yet)."""
        try:
            results = await self._call(batch)
        except Exception as e:
            return e
        for item, out in zip(batch, results, strict=True):
            _resolve(item.future, out)
        return None


class _Unbatchable(PredictionError):
    """A merged call's outputs do not keep the batch on axis 0: only single requests can be answered."""


def _halves(batch: list[_Item]) -> tuple[list[_Item], list[_Item]]:
    """``batch`` (two requests or more) cut in two non-empty parts of about equal rows.

    Equal halves make an input-independent error read the same in both (messages often state shapes).
    """
    total = sum(item.rows for item in batch)
    best, best_gap, rows = 1, total, 0
    for i, item in enumerate(batch[:-1], start=1):
        rows += item.rows
        gap = abs(total - 2 * rows)
        if gap < best_gap:
            best, best_gap = i, gap
    return batch[:best], batch[best:]


def _same_error(a: BaseException, b: BaseException) -> bool:
    return type(a) is type(b) and str(a) == str(b)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the caller may have gone away (client disconnect, cancellation)
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
