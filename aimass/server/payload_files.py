"""The files of a payload log: the Parquet layout, the writer of one file, and reading logs back.

Each logged request row is one Parquet row: ``request_id``, ``row`` (its index in the request's
batch), ``timestamp``, ``latency_s`` and one column per input and output tensor (a tensor's
per-row shape in the field metadata), in files ``<destination>/<model>/<version>/part-<UTC
time>-<n>[-<writer>].parquet``. :class:`~aimass.server.payload_log.PayloadLog` queues and writes
them (bounded in memory and on disk); :func:`read_payloads` reads them back as arrays.

Example:
    >>> logged = read_payloads("logs/", model="fraud")     # doctest: +SKIP
    >>> logged.inputs["x"].shape, len(logged)               # doctest: +SKIP
    ((120, 4), 120)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import StoreError

__all__ = [
    "META_COLUMNS",
    "PART",
    "SHAPE_KEY",
    "SLICE_ROWS",
    "STAMP",
    "LoggedPayloads",
    "PartWriter",
    "PayloadRecord",
    "filesystem",
    "read_payloads",
    "tables",
]

META_COLUMNS = ("request_id", "row", "timestamp", "latency_s")
SHAPE_KEY = b"aimass.shape"
# Rows per Arrow table the writer builds: the per-row columns (request id, row, time, latency) cost
# ~60 bytes a row, so a request of millions of narrow rows is written in slices, not expanded whole.
SLICE_ROWS = 65_536
STAMP = "%Y%m%dT%H%M%S"
# Completed files, the only ones ever removed: part-<UTC time>-<n>[-<writer>].parquet
PART = re.compile(r"^part-(\d{8}T\d{6})-(\d+)(?:-[0-9a-f]+)?\.parquet$")


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


class PartWriter:
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


def filesystem(destination: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    if "://" in destination:
        fsspec = require("fsspec", feature="payload logs", extra="payloads")
        fs, root = fsspec.core.url_to_fs(destination, **dict(storage_options or {}))
        return fs, str(root).rstrip("/")
    local = require("fsspec.implementations.local", feature="payload logs", extra="payloads", package="fsspec")
    return local.LocalFileSystem(), str(Path(destination).resolve())  # the same code path as URLs


_Span = tuple[PayloadRecord, int, int]  # a record and the rows [start, stop) of it in one table


def tables(records: list[PayloadRecord], max_rows: int) -> Iterator[Any]:
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
            fields.append(pa.field(column, array.type, metadata={SHAPE_KEY: json.dumps(shape).encode()}))
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
    fs, root = filesystem(str(destination), storage_options)
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
    shape = json.loads((field.metadata or {}).get(SHAPE_KEY, b"[]"))
    combined = column.combine_chunks()
    if shape == [-1]:
        return np.asarray(combined.to_pylist(), dtype=object)
    if not shape:
        return np.asarray(combined.to_numpy(zero_copy_only=False))
    values = np.asarray(combined.flatten().to_numpy(zero_copy_only=False))
    return values.reshape(len(combined), *shape)
