"""Payload logs: what a server was asked and what it answered, in Parquet files, for evaluation and updates.

``create_app(..., payload_log=PayloadLog("logs/"))`` (``aimass serve --log-payloads logs/``, or an
fsspec URL such as ``s3://bucket/prefix``) records a sampled share (``sample_rate``) of successful
inference requests: model, version, request id, time, latency, and every input and output tensor.
The request path only puts the record in a bounded queue; when the queue is full the record is
dropped and counted (``aimass_payload_log_dropped_total``), so logging never slows a request down.
A background thread writes the records, one Parquet row per request row (the batch axis spread
out), to ``<destination>/<model>/<version>/part-<time>-<n>.parquet``; a file is written under a
hidden name and renamed when complete, so readers never see half a file, and a new one starts after
``rotate_bytes`` or ``rotate_seconds``. ``hook`` sees each record before it is queued and may
return it changed (masked fields, dropped tensors) or None to drop it.

:func:`read_payloads` reads the logs back as arrays, ready for :func:`aimass.evaluate.evaluate`
and :meth:`aimass.Model.update` once labelled.

Example:
    >>> app = create_app(repository="library/", payload_log=PayloadLog("logs/", sample_rate=0.1))  # doctest: +SKIP
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
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import StoreError

__all__ = ["LoggedPayloads", "PayloadLog", "PayloadRecord", "new_request_id", "read_payloads"]

log = logging.getLogger("aimass.server")

_META_COLUMNS = ("request_id", "row", "timestamp", "latency_s")
_SHAPE_KEY = b"aimass.shape"


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


def new_request_id() -> str:
    """A request id for a request that came without one (its response carries it back)."""
    return uuid.uuid4().hex


class PayloadLog:
    """The payload logger of one server: sampling, a bounded queue, and a background Parquet writer.

    Example:
        >>> plog = PayloadLog("logs/", sample_rate=0.5, hook=lambda r: r)   # doctest: +SKIP
        >>> plog.close()                                                      # doctest: +SKIP
    """

    def __init__(
        self,
        destination: str | os.PathLike[str],
        *,
        sample_rate: float = 1.0,
        max_queue: int = 10_000,
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
        self.destination = str(destination)
        self.sample_rate = sample_rate
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.flush_seconds = flush_seconds
        self.hook = hook
        self.fs, self.root = _filesystem(self.destination, storage_options)
        self.fs.makedirs(self.root, exist_ok=True)
        self.logged = 0
        self.dropped = 0
        self.files = 0
        self._queue: queue.Queue[PayloadRecord | None] = queue.Queue(maxsize=max_queue)
        self._seq = itertools.count()
        self._counters: Any = None
        self._thread = threading.Thread(target=self._write_loop, name="aimass-payload-log", daemon=True)
        self._thread.start()

    def bind_metrics(self, registry: Any) -> None:
        """Count records logged and dropped, and files written, in a server's Prometheus registry."""
        from prometheus_client import Counter

        self._counters = (
            Counter("aimass_payload_log_records", "Requests queued for the payload log.", registry=registry),
            Counter("aimass_payload_log_dropped", "Payload records dropped: queue full.", registry=registry),
            Counter("aimass_payload_log_files", "Payload log files completed.", registry=registry),
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
    ) -> None:
        """Queue one request's record (call :meth:`sampled` first); dropped and counted when the queue is full."""
        record = PayloadRecord(model, version, request_id, time.time(), latency, dict(inputs), dict(outputs))
        if self.hook is not None:
            changed = self.hook(record)
            if changed is None:
                return
            record = changed
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self._counters:
                self._counters[1].inc()
            return
        self.logged += 1
        if self._counters:
            self._counters[0].inc()

    # -- the writer thread ------------------------------------------------------------------------

    def _write_loop(self) -> None:
        writers: dict[tuple[str, str], _PartWriter] = {}
        pending: dict[tuple[str, str], list[PayloadRecord]] = {}
        stop = False
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
            for key, records in pending.items():
                try:
                    self._write(writers, key, records)
                except Exception:  # a broken destination must not take the server down
                    log.exception("payload log: %d records of %s lost", len(records), key)
            pending.clear()
            now = time.monotonic()
            for key, writer in list(writers.items()):
                if stop or writer.full(self.rotate_bytes, self.rotate_seconds, now):
                    self._finish(writers.pop(key))

    def _write(
        self, writers: dict[tuple[str, str], _PartWriter], key: tuple[str, str], records: list[PayloadRecord]
    ) -> None:
        table = _table(records)
        writer = writers.get(key)
        if writer is not None and not writer.schema.equals(table.schema):
            self._finish(writers.pop(key))  # tensors changed (another output asked for): a new file
            writer = None
        if writer is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            directory = f"{self.root}/{key[0]}/{key[1]}"
            writer = writers[key] = _PartWriter(self.fs, directory, f"part-{stamp}-{next(self._seq):05d}", table.schema)
        writer.write(table)

    def _finish(self, writer: _PartWriter) -> None:
        writer.close()
        self.files += 1
        if self._counters:
            self._counters[2].inc()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, complete the open files, and stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout)


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
        self.writer.write_table(table)
        self.bytes += table.nbytes

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


def _table(records: list[PayloadRecord]) -> Any:
    """Records -> one Arrow table, a row per request row; tensors as (fixed-size list) columns."""
    pa = require("pyarrow", feature="payload logs", extra="payloads")
    counts = [_rows(r) for r in records]
    columns: dict[str, Any] = {
        "request_id": pa.array([r.request_id for r, n in zip(records, counts, strict=True) for _ in range(n)]),
        "row": pa.array([i for n in counts for i in range(n)], pa.int32()),
        "timestamp": pa.array(
            [r.timestamp for r, n in zip(records, counts, strict=True) for _ in range(n)], pa.float64()
        ),
        "latency_s": pa.array(
            [r.latency for r, n in zip(records, counts, strict=True) for _ in range(n)], pa.float64()
        ),
    }
    fields = [pa.field(k, v.type) for k, v in columns.items()]
    for prefix, getter in (("input", lambda r: r.inputs), ("output", lambda r: r.outputs)):
        names = sorted({n for r in records for n in getter(r)})
        for name in names:
            parts = [_batched(getter(r).get(name), n) for r, n in zip(records, counts, strict=True)]
            array, shape = _arrow_column(pa, parts, counts)
            column = f"{prefix}.{name}"
            columns[column] = array
            fields.append(pa.field(column, array.type, metadata={_SHAPE_KEY: json.dumps(shape).encode()}))
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))


def _rows(record: PayloadRecord) -> int:
    first = next(iter(record.inputs.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) >= 1 else 1


def _batched(value: np.ndarray | None, rows: int) -> np.ndarray | None:
    if value is None:
        return None
    a = np.asarray(value)
    if a.ndim == 0 or a.shape[0] != rows:
        a = np.broadcast_to(a, (rows, *a.shape)) if a.ndim == 0 else a.reshape(1, *a.shape)
    return a


def _arrow_column(pa: Any, parts: list[np.ndarray | None], counts: list[int]) -> tuple[Any, list[int]]:
    """One tensor's column: fixed-size lists of its flattened rows (shape kept in the field's metadata).

    When requests disagree on the inner shape, or some lack the tensor, each row is a list of its
    own (shape ``[-1]``), with nulls for the missing ones.
    """
    known = [p for p in parts if p is not None]
    shape = list(known[0].shape[1:])
    if len(known) < len(parts) or any(list(p.shape[1:]) != shape for p in known):
        flat: list[Any] = []
        for p, n in zip(parts, counts, strict=True):
            flat.extend([None] * n if p is None else p.reshape(p.shape[0], -1).tolist())
        return pa.array(flat), [-1]
    width = int(np.prod(shape)) if shape else 1
    merged = np.concatenate([p.reshape(-1) for p in known])
    base = pa.array(merged.tolist() if merged.dtype == object else merged)
    return (pa.FixedSizeListArray.from_arrays(base, width) if shape else base), shape


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
    table = pa.concat_tables(tables, promote_options="default").sort_by(
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
