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

:func:`read_payloads` reads the logs back as arrays, ready for :func:`aimass.evaluate.evaluate`
and :meth:`aimass.Model.update` once labelled.

Example:
    >>> app = create_app(repository="library/", log_payloads=PayloadLog("logs/", sample_rate=0.1))  # doctest: +SKIP
    >>> logged = read_payloads("logs/", model="fraud")                                              # doctest: +SKIP
    >>> new = model.update(logged.inputs, labels_for(logged.request_ids))                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import StoreError

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

_META_COLUMNS = ("request_id", "row", "timestamp", "latency_s")
_SHAPE_KEY = b"aimass.shape"
# Rows per Arrow table the writer builds: the per-row columns (request id, row, time, latency) cost
# ~60 bytes a row, so a request of millions of narrow rows is written in slices, not expanded whole.
_SLICE_ROWS = 65_536
_STAMP = "%Y%m%dT%H%M%S"
# Completed files, the only ones ever removed: part-<UTC time>-<n>[-<writer>].parquet
_PART = re.compile(r"^part-(\d{8}T\d{6})-(\d+)(?:-[0-9a-f]+)?\.parquet$")
_SWEEP_SECONDS = 60.0  # how often the disk cap and retention are checked besides at each completed file


@dataclasses.dataclass
class PayloadRecord:
    """One logged request: what a ``hook`` sees, and may change."""

    model: str
    version: str
    request_id: str
    timestamp: float
    latency: float
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def nbytes(self) -> int:
        """Bytes of the tensors it holds: what it costs the queue's budget.

        Example:
            >>> PayloadRecord("m", "1", "r", 0.0, 0.0, {"x": np.zeros(4, np.float32)}, {}).nbytes()
            16
        """
        return sum(int(np.asarray(a).nbytes) for t in (self.inputs, self.outputs) for a in t.values())


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
        self.fs, self.root = _filesystem(self.destination, storage_options)
        self.fs.makedirs(self.root, exist_ok=True)
        self.logged = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.files = 0
        self.removed_files = 0
        self.queued_bytes = 0  # tensors' bytes queued or being written: what max_queue_bytes bounds
        self._lock = threading.Lock()  # queued_bytes: the request path adds, the writer subtracts
        self._queue: queue.Queue[PayloadRecord | None] = queue.Queue(maxsize=max_queue)
        self._seq = itertools.count()
        # Two writers (server processes, restarts within a second) never pick the same file name.
        self._writer_id = uuid.uuid4().hex[:8]
        self._writers: dict[tuple[str, str], _PartWriter] = {}
        self._counters: Any = None
        self._thread = threading.Thread(target=self._write_loop, name="aimass-payload-log", daemon=True)
        self._thread.start()

    def bind_metrics(self, registry: Any) -> None:
        """Count records logged and dropped, bytes dropped and queued, files written and removed, in ``registry``."""
        from prometheus_client import Counter, Gauge

        self._counters = _Counters(
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
        for table in _tables(records, _SLICE_ROWS):
            writer = self._writers.get(key)
            if writer is not None and not writer.schema.equals(table.schema):
                completed |= self._finish(self._writers.pop(key))  # tensors changed (another output asked for)
                writer = None
            if writer is None:
                stamp = dt.datetime.now(dt.UTC).strftime(_STAMP)
                directory = f"{self.root}/{key[0]}/{key[1]}"
                stem = f"part-{stamp}-{next(self._seq):05d}-{self._writer_id}"
                writer = self._writers[key] = _PartWriter(self.fs, directory, stem, table.schema)
            writer.write(table)
        return completed

    def _finish(self, writer: _PartWriter) -> bool:
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
            m = _PART.match(str(path).rsplit("/", 1)[-1])
            if m is not None:
                parts.append((m[1], int(m[2]), str(path), int(info.get("size") or 0)))
        parts.sort()  # oldest first: by the time in the name, then the sequence number
        total = sum(p[3] for p in parts) + sum(w.bytes for w in self._writers.values())
        now = dt.datetime.now(dt.UTC)
        for stamp, _, path, size in parts:
            started = dt.datetime.strptime(stamp, _STAMP).replace(tzinfo=dt.UTC)
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
            self.removed_files += 1
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


class _PartWriter:
    """One Parquet file in progress: written under a hidden name, renamed when complete."""

    def __init__(self, fs: Any, directory: str, stem: str, schema: Any) -> None:
        pq = require("pyarrow.parquet", feature="payload logs", extra="payloads", package="pyarrow")
        fs.makedirs(directory, exist_ok=True)
        self.fs = fs
        self.final = f"{directory}/{stem}.parquet"
        self.partial = f"{directory}/.{stem}.parquet.partial"
        self.handle = fs.open(self.partial, "wb")
        self.schema = schema
        self.writer = pq.ParquetWriter(self.handle, schema)
        self.opened = time.monotonic()
        self.bytes = 0

    def write(self, table: Any) -> None:
        self.writer.write_table(table)  # one row group, written through to the file
        self.bytes = self.handle.tell()

    def full(self, rotate_bytes: int, rotate_seconds: float, now: float) -> bool:
        return self.bytes >= rotate_bytes or now - self.opened >= rotate_seconds

    def close(self) -> None:
        self.writer.close()
        self.handle.close()
        self.fs.mv(self.partial, self.final)


def _filesystem(destination: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    if "://" in destination:
        fsspec = require("fsspec", feature="payload logs", extra="payloads")
        fs, root = fsspec.core.url_to_fs(destination, **dict(storage_options or {}))
        return fs, str(root).rstrip("/")
    local = require("fsspec.implementations.local", feature="payload logs", extra="payloads", package="fsspec")
    return local.LocalFileSystem(), str(Path(destination).resolve())  # the same code path as URLs


_Span = tuple[PayloadRecord, int, int]  # a record and the rows [start, stop) of it in one table


def _tables(records: list[PayloadRecord], max_rows: int) -> Iterator[Any]:
    """Records -> Arrow tables of at most ``max_rows`` rows each (a large request spans several)."""
    spans: list[_Span] = []
    room = max_rows
    for record in records:
        rows, start = _rows(record), 0
        while True:
            take = min(rows - start, room)
            spans.append((record, start, start + take))
            start += take
            room -= take
            if room == 0:
                yield _table(spans)
                spans, room = [], max_rows
            if start >= rows:
                break
    if spans:
        yield _table(spans)


def _table(spans: list[_Span]) -> Any:
    """Spans of records -> one Arrow table, a row per request row; tensors as (fixed-size list) columns.

    Built from the arrays without Python lists: the per-request values are repeated with numpy
    and Arrow ``take``, the tensors go to Arrow as zero-copy chunks, one per request.
    """
    pa = require("pyarrow", feature="payload logs", extra="payloads")
    counts = np.array([stop - start for _, start, stop in spans], np.int64)
    owner = pa.array(np.repeat(np.arange(len(spans), dtype=np.int32), counts))
    starts = np.array([start for _, start, _ in spans], np.int64)
    offsets = np.cumsum(counts) - counts
    columns: dict[str, Any] = {
        "request_id": pa.array([r.request_id for r, _, _ in spans], pa.string()).take(owner),
        "row": pa.array((np.arange(int(counts.sum())) - np.repeat(offsets - starts, counts)).astype(np.int32)),
        "timestamp": pa.array(np.repeat(np.array([r.timestamp for r, _, _ in spans], np.float64), counts)),
        "latency_s": pa.array(np.repeat(np.array([r.latency for r, _, _ in spans], np.float64), counts)),
    }
    fields = [pa.field(k, v.type) for k, v in columns.items()]
    for prefix, getter in (("input", lambda r: r.inputs), ("output", lambda r: r.outputs)):
        names = sorted({n for r, _, _ in spans for n in getter(r)})
        for name in names:
            parts = []
            for r, start, stop in spans:
                value = _batched(getter(r).get(name), _rows(r))
                parts.append(None if value is None else value[start:stop])
            array, shape = _arrow_column(pa, parts, counts)
            column = f"{prefix}.{name}"
            columns[column] = array
            fields.append(pa.field(column, array.type, metadata={_SHAPE_KEY: json.dumps(shape).encode()}))
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))


def _rows(record: PayloadRecord) -> int:
    first = next(iter(record.inputs.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) >= 1 else 1


def _batched(value: np.ndarray | None, rows: int) -> np.ndarray | None:
    """``value`` with ``rows`` on its first axis; a tensor without the batch axis is repeated on each row (a view)."""
    if value is None:
        return None
    a = np.asarray(value)
    if a.ndim == 0 or a.shape[0] != rows:
        a = np.broadcast_to(a, (rows, *a.shape))
    return a


def _arrow_column(pa: Any, parts: list[np.ndarray | None], counts: np.ndarray) -> tuple[Any, list[int]]:
    """One tensor's column: fixed-size lists of its flattened rows (shape kept in the field's metadata).

    When requests disagree on the inner shape, or some lack the tensor, each row is a list of its
    own (shape ``[-1]``), with nulls for the missing ones. Numeric rows go to Arrow without a copy.
    """
    known = [p for p in parts if p is not None]
    numeric = all(p.dtype.kind != "O" for p in known)
    dtype = np.result_type(*known) if numeric else np.dtype(object)
    shape = list(known[0].shape[1:])
    ragged = len(known) < len(parts) or any(list(p.shape[1:]) != shape for p in known)
    width = int(np.prod(shape)) if shape else 1

    def values(p: np.ndarray, value_type: Any = None) -> Any:
        flat = np.ascontiguousarray(p, dtype=dtype).reshape(-1)
        return pa.array(flat, type=value_type)  # zero-copy for numbers; object arrays iterate in C

    value_type = values(known[0][:0]).type if numeric else _object_type(pa, known)
    chunks = []
    for p, n in zip(parts, counts, strict=True):
        if p is None:  # only when ragged
            chunks.append(pa.nulls(int(n), pa.list_(value_type)))
        elif ragged:
            row = int(np.prod(p.shape[1:]))
            offsets = pa.array(np.arange(int(n) + 1, dtype=np.int32) * row)
            chunks.append(pa.ListArray.from_arrays(offsets, values(p, value_type)))
        elif shape:
            chunks.append(pa.FixedSizeListArray.from_arrays(values(p, value_type), width))
        else:
            chunks.append(values(p, value_type))
    if ragged:
        return pa.chunked_array(chunks, pa.list_(value_type)), [-1]
    return pa.chunked_array(chunks, chunks[0].type), shape


def _object_type(pa: Any, known: list[np.ndarray]) -> Any:
    """The Arrow type of BYTES tensors (object arrays): what their first element says, binary when none."""
    for p in known:
        if p.size:
            return pa.array(np.asarray(p).reshape(-1)[:1]).type
    return pa.binary()


# -- reading back -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoggedPayloads:
    """Logged requests as arrays: inputs and outputs by tensor name, one row per request row.

    Example:
        >>> logged = read_payloads("logs/", model="fraud")        # doctest: +SKIP
        >>> evaluate(model, logged.inputs, labels)                 # doctest: +SKIP
    """

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    request_ids: np.ndarray
    rows: np.ndarray
    timestamps: np.ndarray
    latencies: np.ndarray
    versions: np.ndarray

    def __len__(self) -> int:
        return int(self.request_ids.shape[0])


def read_payloads(
    destination: str | os.PathLike[str],
    *,
    model: str,
    version: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> LoggedPayloads:
    """Read a model's payload logs (every version, or one) back as arrays, oldest first.

    Example:
        >>> logged = read_payloads("logs/", model="fraud", version="3")   # doctest: +SKIP
        >>> logged.inputs["x"].shape
        (1200, 4)
    """
    pa = require("pyarrow", feature="payload logs", extra="payloads")
    pq = require("pyarrow.parquet", feature="payload logs", extra="payloads", package="pyarrow")
    fs, root = _filesystem(str(destination), storage_options)
    base = f"{root}/{model}"
    if not fs.exists(base):
        raise StoreError(f"no payload logs of model {model!r} under {destination!s}")
    versions = [version] if version is not None else [p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
    tables = []
    for v in versions:
        directory = f"{base}/{v}"
        if not fs.exists(directory):
            raise StoreError(f"no payload logs of model {model!r} version {v!r} under {destination!s}")
        for path in sorted(fs.ls(directory, detail=False)):
            name = path.rsplit("/", 1)[-1]
            if name.startswith(".") or not name.endswith(".parquet"):
                continue  # files still being written
            with fs.open(path, "rb") as fh:
                table = pq.read_table(fh)
            tables.append(table.append_column("version", pa.array([v] * table.num_rows)))
    if not tables:
        raise StoreError(f"no complete payload log files of model {model!r} under {destination!s}")
    # permissive: ragged columns of older files hold list<double> where newer ones keep the dtype
    table = pa.concat_tables(tables, promote_options="permissive").sort_by(
        [("timestamp", "ascending"), ("row", "ascending")]
    )
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    for field in table.schema:
        for prefix, into in (("input.", inputs), ("output.", outputs)):
            if field.name.startswith(prefix):
                into[field.name[len(prefix) :]] = _numpy(table.column(field.name), field)
    return LoggedPayloads(
        inputs=inputs,
        outputs=outputs,
        request_ids=np.asarray(table.column("request_id").to_pylist(), dtype=object),
        rows=table.column("row").to_numpy(),
        timestamps=table.column("timestamp").to_numpy(),
        latencies=table.column("latency_s").to_numpy(),
        versions=np.asarray(table.column("version").to_pylist(), dtype=object),
    )


def _numpy(column: Any, field: Any) -> np.ndarray:
    shape = json.loads((field.metadata or {}).get(_SHAPE_KEY, b"[]"))
    combined = column.combine_chunks()
    if shape == [-1]:
        return np.asarray(combined.to_pylist(), dtype=object)
    if not shape:
        return np.asarray(combined.to_numpy(zero_copy_only=False))
    values = np.asarray(combined.flatten().to_numpy(zero_copy_only=False))
    return values.reshape(len(combined), *shape)
