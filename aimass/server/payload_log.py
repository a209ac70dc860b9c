"""Payload logs: what a server was asked and what it answered, in Parquet files, for evaluation and updates.

``create_app(..., log_payloads=PayloadLog("logs/"))`` (``aimass serve --log-payloads logs/``, or an
fsspec URL such as ``s3://bucket/prefix``) records a sampled share (``sample_rate``) of successful
inference requests: model, version, request id, time, latency, and every input and output tensor.

Everything is bounded, so a flood of large requests costs neither memory nor disk beyond the
settings, and never slows a request down:

- **Memory.** The request path only puts the record in a queue bounded in bytes
  (``max_queue_bytes``, the tensors' bytes held until written, default 256 MiB) and in records
  (``max_queue``); a record that does not fit is dropped and counted
  (``aimass_payload_log_dropped_total`` and ``aimass_payload_log_dropped_bytes_total``, by
  ``reason``), never waited for.
- **Writing.** A background thread writes the records, one Parquet row per request row (the batch
  axis spread out), straight from the arrays (no Python lists), 65 536 rows at a time at most, to
  ``<destination>/<model>/<version>/part-<time>-<n>-<writer>.parquet``; a file is written under a
  hidden name and renamed when complete, so readers never see half a file, and a new one starts
  after ``rotate_bytes`` (bytes written) or ``rotate_seconds``.
- **Disk.** Completed files are removed, oldest first, while the logs under the destination
  (open files included) hold more than ``max_bytes`` (default 1 GiB), and once their first record
  is older than ``max_age`` seconds (default 7 days); ``aimass_payload_log_removed_files_total``
  counts them. 0 turns either off.

``hook`` sees each record before it is queued and may return it changed (masked fields, dropped
tensors) or None to drop it.

:func:`read_payloads` (:mod:`aimass.server.payload_files`, which holds the file layout) reads
the logs back as arrays, ready for :func:`aimass.evaluate.evaluate` and :meth:`aimass.Model.update`
once labelled.

Example:
    >>> app = create_app(repository="library/", log_payloads=PayloadLog("logs/", sample_rate=0.1))  # doctest: +SKIP
    >>> logged = read_payloads("logs/", model="fraud")                                              # doctest: +SKIP
    >>> new = model.update(logged.inputs, labels_for(logged.request_ids))                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from aimass.server.payload_files import (
    PART,
    SLICE_ROWS,
    STAMP,
    LoggedPayloads,
    PartWriter,
    PayloadRecord,
    filesystem,
    read_payloads,
    tables,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_QUEUE_BYTES",
    "LoggedPayloads",
    "PayloadLog",
    "PayloadRecord",
    "new_request_id",
    "read_payloads",
]

log = logging.getLogger("aimass.server")

DEFAULT_MAX_QUEUE_BYTES = 256 * 1024 * 1024  # tensors held in memory until written: four 64 MiB bodies
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # log files kept on disk
DEFAULT_MAX_AGE = 7 * 24 * 3600.0  # seconds a log file is kept

_SWEEP_SECONDS = 60.0  # how often the disk cap and retention are checked besides at each completed file


def new_request_id() -> str:
    """A request id for a request that came without one (its response carries it back)."""
    return uuid.uuid4().hex


class PayloadLog:
    """The payload logger of one server: sampling, a queue bounded in bytes, a background Parquet writer, a disk cap.

    Example:
        >>> plog = PayloadLog("logs/", sample_rate=0.5, max_bytes=10 << 30, max_age=30 * 86400)   # doctest: +SKIP
        >>> plog.close()                                                                            # doctest: +SKIP
    """

    def __init__(
        self,
        destination: str | os.PathLike[str],
        *,
        sample_rate: float = 1.0,
        max_queue: int = 10_000,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_seconds: float = 300.0,
        flush_seconds: float = 1.0,
        hook: Callable[[PayloadRecord], PayloadRecord | None] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        for name, value in (("max_queue_bytes", max_queue_bytes), ("max_bytes", max_bytes), ("max_age", max_age)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit), got {value}")
        self.destination = str(destination)
        self.sample_rate = sample_rate
        self.max_queue_bytes = max_queue_bytes
        self.max_bytes = max_bytes
        self.max_age = max_age
        # At least four files under the cap, so removing the oldest frees a share of it; and files
        # complete within max_age, so retention is never held back by a file still open.
        self.rotate_bytes = min(rotate_bytes, max(1, max_bytes // 4)) if max_bytes else rotate_bytes
        self.rotate_seconds = min(rotate_seconds, max_age) if max_age else rotate_seconds
        self.flush_seconds = flush_seconds
        self.hook = hook
        self.fs, self.root = filesystem(self.destination, storage_options)
        self.fs.makedirs(self.root, exist_ok=True)
        self.logged = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.files = 0
        self.removed_files = 0
        self._removed_by: dict[str, int] = {}  # reason -> files, for metrics bound after the writer started
        self.queued_bytes = 0  # tensors' bytes queued or being written: what max_queue_bytes bounds
        self._lock = threading.Lock()  # queued_bytes: the request path adds, the writer subtracts
        self._queue: queue.Queue[PayloadRecord | None] = queue.Queue(maxsize=max_queue)
        self._seq = itertools.count()
        # Two writers (server processes, restarts within a second) never pick the same file name.
        self._writer_id = uuid.uuid4().hex[:8]
        self._writers: dict[tuple[str, str], PartWriter] = {}
        self._counters: Any = None
        self._thread = threading.Thread(target=self._write_loop, name="aimass-payload-log", daemon=True)
        self._thread.start()

    def bind_metrics(self, registry: Any) -> None:
        """Count records logged and dropped, bytes dropped and queued, files written and removed, in ``registry``."""
        from prometheus_client import Counter, Gauge

        counters = _Counters(
            Counter("aimass_payload_log_records", "Requests queued for the payload log.", registry=registry),
            Counter(
                "aimass_payload_log_dropped",
                "Payload records dropped: queue full (records) or over its byte budget (bytes).",
                ("reason",),
                registry=registry,
            ),
            Counter(
                "aimass_payload_log_dropped_bytes",
                "Tensor bytes of the payload records dropped.",
                ("reason",),
                registry=registry,
            ),
            Gauge(
                "aimass_payload_log_queued_bytes",
                "Tensor bytes of payload records queued or being written.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            Counter("aimass_payload_log_files", "Payload log files completed.", registry=registry),
            Counter(
                "aimass_payload_log_removed_files",
                "Payload log files removed: over max_bytes or older than max_age.",
                ("reason",),
                registry=registry,
            ),
        )
        with self._lock:  # the writer may already have removed files (it applies the cap at start)
            for reason, n in self._removed_by.items():
                counters.removed_files.labels(reason).inc(n)
            self._counters = counters

    # -- the request path -------------------------------------------------------------------------

    def sampled(self) -> bool:
        """Whether this request is logged (drawn at ``sample_rate``)."""
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def log(
        self,
        model: str,
        version: str,
        request_id: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        latency: float,
    ) -> bool:
        """Queue one request's record (call :meth:`sampled` first); False when it was dropped (and counted).

        It is dropped when the queue holds ``max_queue`` records, or when its tensors would take the
        bytes queued past ``max_queue_bytes``: the request never waits for the writer.
        """
        record = PayloadRecord(model, version, request_id, time.time(), latency, dict(inputs), dict(outputs))
        if self.hook is not None:
            changed = self.hook(record)
            if changed is None:
                return False
            record = changed
        size = record.nbytes()
        with self._lock:
            if self.max_queue_bytes and self.queued_bytes + size > self.max_queue_bytes:
                return self._drop("bytes", size)
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                return self._drop("records", size)
            self.queued_bytes += size
            self.logged += 1
            if self._counters:  # under the lock, so the gauge never dips below zero
                self._counters.records.inc()
                self._counters.queued_bytes.inc(size)
        return True

    def _drop(self, reason: str, size: int) -> bool:
        self.dropped += 1
        self.dropped_bytes += size
        if self._counters:
            self._counters.dropped.labels(reason).inc()
            self._counters.dropped_bytes.labels(reason).inc(size)
        return False

    def _written(self, records: list[PayloadRecord]) -> None:
        size = sum(r.nbytes() for r in records)
        with self._lock:
            self.queued_bytes -= size
            if self._counters:
                self._counters.queued_bytes.dec(size)

    # -- the writer thread ------------------------------------------------------------------------

    def _write_loop(self) -> None:
        pending: dict[tuple[str, str], list[PayloadRecord]] = {}
        stop = False
        self._sweep()  # files left by earlier runs count against the cap and age too
        swept = time.monotonic()
        sweep_every = min(_SWEEP_SECONDS, self.max_age / 4) if self.max_age else _SWEEP_SECONDS
        while not stop:
            deadline = time.monotonic() + self.flush_seconds
            while True:  # collect for up to flush_seconds
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pending.setdefault((item.model, item.version), []).append(item)
            completed = False
            for key, records in pending.items():
                try:
                    completed |= self._write(key, records)
                except Exception:  # a broken destination must not take the server down
                    log.exception("payload log: %d records of %s lost", len(records), key)
                finally:
                    self._written(records)
            pending.clear()
            now = time.monotonic()
            for key, writer in list(self._writers.items()):
                if stop or writer.full(self.rotate_bytes, self.rotate_seconds, now):
                    completed |= self._finish(self._writers.pop(key))
            if stop or completed or now - swept >= sweep_every:
                self._sweep()
                swept = now

    def _write(self, key: tuple[str, str], records: list[PayloadRecord]) -> bool:
        """Append ``records`` to the model version's open file; True when a file was completed on the way."""
        completed = False
        for table in tables(records, SLICE_ROWS):
            writer = self._writers.get(key)
            if writer is not None and not writer.schema.equals(table.schema):
                completed |= self._finish(self._writers.pop(key))  # tensors changed (another output asked for)
                writer = None
            if writer is None:
                stamp = dt.datetime.now(dt.UTC).strftime(STAMP)
                directory = f"{self.root}/{key[0]}/{key[1]}"
                stem = f"part-{stamp}-{next(self._seq):05d}-{self._writer_id}"
                writer = self._writers[key] = PartWriter(self.fs, directory, stem, table.schema)
            writer.write(table)
        return completed

    def _finish(self, writer: PartWriter) -> bool:
        writer.close()
        self.files += 1
        if self._counters:
            self._counters.files.inc()
        return True

    def _sweep(self) -> None:
        """Remove completed files, oldest first, while over ``max_bytes`` or older than ``max_age``."""
        if not (self.max_bytes or self.max_age):
            return
        try:
            found = self.fs.find(self.root, detail=True)
        except Exception:  # a destination that cannot be listed is logged, never fatal
            log.exception("payload log: cannot list %s for the disk cap", self.destination)
            return
        parts = []
        for path, info in found.items():
            m = PART.match(str(path).rsplit("/", 1)[-1])
            if m is not None:
                parts.append((m[1], int(m[2]), str(path), int(info.get("size") or 0)))
        parts.sort()  # oldest first: by the time in the name, then the sequence number
        total = sum(p[3] for p in parts) + sum(w.bytes for w in self._writers.values())
        now = dt.datetime.now(dt.UTC)
        for stamp, _, path, size in parts:
            started = dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC)
            if self.max_age and (now - started).total_seconds() > self.max_age:
                reason = "max_age"
            elif self.max_bytes and total > self.max_bytes:
                reason = "max_bytes"
            else:
                break  # the rest are newer, and the total is within the cap
            try:
                self.fs.rm(path)
            except Exception:
                log.exception("payload log: cannot remove %s", path)
                continue
            total -= size
            with self._lock:
                self.removed_files += 1
                self._removed_by[reason] = self._removed_by.get(reason, 0) + 1
                if self._counters:
                    self._counters.removed_files.labels(reason).inc()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, complete the open files, apply the disk cap, and stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout)


@dataclasses.dataclass(frozen=True)
class _Counters:
    records: Any
    dropped: Any
    dropped_bytes: Any
    queued_bytes: Any
    files: Any
    removed_files: Any
