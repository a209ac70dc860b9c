"""One loaded model version as the server runs it: validation, batching or a direct call, limits, metrics.

A :class:`ServedModel` is what the registry (:mod:`aimass.server.registry`) holds per loaded version
and what the data plane (:mod:`aimass.server.dataplane`) runs a request on. :class:`BatchingConfig`
and :class:`Limits` are its knobs, under Triton's names.

A model whose backend declares token batching (:mod:`aimass.backends.tokens`: the text backend)
is tokenized once per request as it arrives and batched by tokens, sorted by length
(:mod:`aimass.server.token_batching`).

Example:
    >>> served = registry.get("fraud", None)          # doctest: +SKIP
    >>> await served.infer({"x": rows})                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.backends.threads import thread_limit
from aimass.backends.tokens import TokenRows, token_batching
from aimass.errors import ServiceUnavailable
from aimass.model import Model
from aimass.protocol import documents
from aimass.server.batching import Batcher, Placement
from aimass.server.compute import plan_compute
from aimass.server.metrics import ModelMetrics
from aimass.server.monitoring import ServedMonitor
from aimass.server.token_batching import DEFAULT_MAX_BATCH_TOKENS, REQUEST_TOKENS, TokenMerging
from aimass.server.tracing import compute_marked
from aimass.server.warmup import WarmupResult

if TYPE_CHECKING:
    from aimass.server.settings import ServerSettings

__all__ = ["BatchingConfig", "Limits", "ServedModel"]


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching knobs (Triton's names). ``max_batch_size=0`` turns batching off.

    Example:
        >>> BatchingConfig(max_batch_size=64, max_queue_delay=0.0005, max_batch_tokens=4096).max_batch_tokens
        4096
    """

    max_batch_size: int = 64
    max_queue_delay: float = 0.0
    max_concurrency: int = 2
    inline_below: float = 0.0002  # calls proven shorter than this run on the event loop (batching.Placement)
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS  # text models: tokens per merged batch and per call
    threads_per_call: int = 0  # threads one model call may use (aimass.server.compute); 0: the framework's default

    @classmethod
    def from_settings(cls, s: ServerSettings) -> BatchingConfig:
        """The batching of a server's settings, with the threads per call of its compute plan."""
        plan = plan_compute(s.instances, s.call_threads)
        return cls(
            s.max_batch_size,
            s.max_queue_delay,
            s.instances,
            max_batch_tokens=s.max_batch_tokens,
            threads_per_call=plan.threads,
        )


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per model version: how many requests it may hold, and how long one may take. 0 / None = no limit.

    ``max_queue_size`` counts the requests a model version holds at once, queued or running (a
    request that timed out still counts until its model call really ends, since a thread cannot be
    stopped); one more is refused with 503 and ``Retry-After``. ``request_timeout`` (seconds)
    answers 504 when a request takes longer; setting it keeps every model call off the event loop
    (no inline placement), because a call on the loop could not be timed out.

    Example:
        >>> Limits(max_queue_size=256, request_timeout=5.0)
        Limits(max_queue_size=256, request_timeout=5.0, retry_after=1)
    """

    max_queue_size: int = 0
    request_timeout: float | None = None
    retry_after: int = 1  # seconds, sent in Retry-After with each 503


# Requests of up to this many texts are tokenized on the event loop; larger ones in a worker thread.
_TOKENIZE_INLINE = 64


def _batchable(model: Model) -> bool:
    s = model.schema
    return all(t.shape[:1] == [-1] for t in s.inputs) and all(t.shape[:1] == [-1] for t in s.outputs)


class ServedModel:
    """One loaded model version: validation, the batcher (or a direct call), metrics, cached JSON."""

    def __init__(
        self,
        name: str,
        version: str,
        model: Model,
        *,
        batching: BatchingConfig,
        executor: Executor,
        metrics: ModelMetrics,
        limits: Limits | None = None,
        monitor: ServedMonitor | None = None,
    ) -> None:
        limits = limits or Limits()
        if limits.max_queue_size < 0:
            raise ValueError(f"max_queue_size must be >= 0 (0: no limit), got {limits.max_queue_size}")
        if limits.request_timeout is not None and limits.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds or None, got {limits.request_timeout}")
        limit = thread_limit(model.backend) if batching.threads_per_call else None
        if limit is not None:  # calls share the cores (aimass.server.compute)
            limited = limit.limit_threads(batching.threads_per_call)
            if limited is not model.backend:
                model = Model(
                    limited, name=model.name, metadata=model.metadata, report=model.report, example=model.example
                )
        self.name = name
        self.version = version
        self.model = model
        self.metrics = metrics
        self.executor = executor
        self.output_names = model.schema.output_names
        self._coerce = model.schema.coerce
        self._run = model.backend.run
        # Text models: tokenized once per request, merged by tokens and run sorted by length.
        self.tokens = token_batching(model.backend)
        self.merging = TokenMerging(max_tokens=batching.max_batch_tokens) if self.tokens is not None else None
        self.max_queue_size = limits.max_queue_size
        self.request_timeout = limits.request_timeout
        self.retry_after = limits.retry_after
        self.outstanding = 0  # requests admitted and not finished (queued, running, or timed out but running)
        inline_below = 0.0 if limits.request_timeout else batching.inline_below
        self.batcher: Batcher | None = None
        if batching.max_batch_size > 0 and _batchable(model):
            self.batcher = Batcher(
                self.tokens.run_tokens if self.tokens is not None else self._run,
                max_batch_size=batching.max_batch_size,
                max_batch_cost=batching.max_batch_tokens if self.tokens is not None else 0,
                merging=self.merging,
                max_queue_delay=batching.max_queue_delay,
                max_concurrency=batching.max_concurrency,
                executor=executor,
                observer=metrics.observe_batch,
                inline_below=inline_below,
            )
        self.placement = Placement(executor, inline_below)
        self.max_batch_size = self.batcher.max_batch_size if self.batcher else 0
        self.max_queue_delay = batching.max_queue_delay if self.batcher else 0.0
        self.platform = f"aimass_{model.backend_name}"
        self.monitor = monitor  # fed by every request when the package carries a reference profile
        # For the registry and its budget: requests holding this version, when it was last used, the bytes
        # it is counted for, pinned (never evicted), and the future a draining eviction waits on.
        self.users = 0
        self.last_used = 0
        self.memory = 0
        self.pinned = False
        self.drained: asyncio.Future[None] | None = None
        self.warmup: WarmupResult | None = None  # what its warm-up did, when it had one

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate (SchemaError names the tensor) and run, batched when batching is on.

        Raises ServiceUnavailable: 503 when ``max_queue_size`` requests are already held, 504 past
        ``request_timeout``. A monitored version records the request (inputs, outputs, latency) or
        its failure.
        """
        mon = self.monitor
        if mon is None:
            return await self._admit(self._coerce(inputs))
        start = time.perf_counter()
        try:
            ready = self._coerce(inputs)
            out = await self._admit(ready)
        except Exception:
            mon.record_error()
            raise
        mon.record(ready, out, time.perf_counter() - start)
        return out

    async def _admit(self, ready: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        limit = self.max_queue_size
        if limit and self.outstanding >= limit:
            raise ServiceUnavailable(
                f"model {self.name!r} version {self.version!r} is at its limit of {limit} queued or running "
                "requests (max_queue_size); retry later",
                retry_after=self.retry_after,
            )
        if self.request_timeout is not None:
            return await self._infer_with_timeout(ready, self.request_timeout)
        self.outstanding += 1
        try:
            return await self._call(ready)
        finally:
            self.outstanding -= 1

    async def _call(self, ready: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request: dict[str, np.ndarray] | TokenRows = ready
        if self.tokens is not None:
            request = await self._tokenize(ready)
        if self.batcher is not None:
            return await self.batcher.submit(request)
        # A traced request (aimass.server.tracing) notes when the model call ran.
        out: dict[str, np.ndarray] = await self.placement.call(compute_marked(self._timed), request)
        return out

    async def _tokenize(self, ready: dict[str, np.ndarray]) -> TokenRows:
        """The request's texts as token rows (the only time they are tokenized); counted for a route that asks."""
        assert self.tokens is not None
        first = next(iter(ready.values()))
        if first.size <= _TOKENIZE_INLINE:  # a few texts take microseconds: cheaper than a thread hop
            rows = self.tokens.tokenize(ready)
        else:
            rows = await asyncio.get_running_loop().run_in_executor(self.executor, self.tokens.tokenize, ready)
        counter = REQUEST_TOKENS.get()
        if counter is not None:
            counter[0] += rows.tokens
        return rows

    async def _infer_with_timeout(self, ready: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        # The call runs as its own task, shielded: on timeout the client gets 504 at once, while the
        # task (and its worker thread, which cannot be stopped) keeps its queue slot until it ends.
        task = asyncio.ensure_future(self._call(ready))
        self.outstanding += 1
        task.add_done_callback(self._call_done)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise ServiceUnavailable(
                f"model {self.name!r} version {self.version!r} did not answer within {timeout:g} s (request_timeout)",
                status_code=504,
            ) from None

    def _call_done(self, task: asyncio.Future[Any]) -> None:
        self.outstanding -= 1
        if not task.cancelled():
            task.exception()  # retrieved, so a timed-out call's late failure is not reported as unhandled

    def _timed(self, inputs: dict[str, np.ndarray] | TokenRows) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        if isinstance(inputs, TokenRows):
            assert self.tokens is not None and self.merging is not None
            out = self.merging.run(self.tokens.run_tokens, [inputs])[0]
            rows = len(inputs)
        else:
            out = self._run(inputs)
            first = next(iter(inputs.values()), None)
            rows = first.shape[0] if first is not None and first.ndim else 1
        self.metrics.observe_batch(rows, [0.0], time.perf_counter() - start)
        return out

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The V2 model metadata document (:func:`aimass.protocol.documents.model_metadata`)."""
        return documents.model_metadata(self.name, versions, self.model.schema, platform=self.platform)

    def config(self) -> dict[str, Any]:
        """A Triton-style model configuration (what tritonclient and perf_analyzer read)."""
        return documents.model_config(
            self.name,
            self.model.schema,
            version=self.version,
            platform=self.platform,
            backend=self.model.backend_name,
            device=self.model.device,
            max_batch_size=self.max_batch_size,
            max_queue_delay=self.max_queue_delay,
        )
