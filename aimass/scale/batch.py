"""Distributed batch prediction with Ray Data: ``map_batches`` over a pool of actors, each loading the model once.

The model reaches each actor as package bytes (:mod:`aimass.scale.bundle`), is loaded once per
actor, then predicts one batch of rows at a time through :meth:`Model.predict` (same validation,
same errors as a local call). Input data: a ``ray.data.Dataset``, a numpy array, or a path (file or
directory, local or any filesystem Ray Data reads) of Parquet, CSV or ``.npy`` files. Output: a
Parquet directory, or a materialized ``ray.data.Dataset`` when no output path is given.

How columns become model inputs: a column named like an input is that input (list/tensor columns
are stacked to ``[rows, ...]``); ``columns={"x": ["f0", "f1", ...]}`` stacks scalar columns into
one input; a one-input model takes the numpy ``data`` column, or else every column in order.
Outputs are added as columns named like the model's outputs; ``keep_columns`` keeps input columns.

Example:
    >>> from aimass.scale import batch_predict
    >>> batch_predict("mlp.onnx", "rows.parquet", "predictions/", batch_size=1024, actors=2)   # doctest: +SKIP
    'predictions/'
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aimass.errors import AimassError, SchemaError
from aimass.scale.bundle import ModelSource, bundle, load_source
from aimass.scale.cluster import connect, ray_module
from aimass.scale.placement import cluster_cpus, fit_cpus

__all__ = ["Predictor", "actor_cpus", "batch_predict", "read_dataset"]

logger = logging.getLogger("aimass.scale")

_RAISED = re.compile(r"^aimass\.errors\.(?P<cls>[A-Za-z]+): (?P<message>.*)$", re.MULTILINE)
_TENSOR = re.compile(r"^(?:input|output) '([^']+)'")
_READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".npy": "read_numpy"}


class Predictor:
    """The Ray Data actor: loads the model once, then maps batches (dicts of numpy columns) to predictions."""

    def __init__(
        self,
        source: ModelSource,
        options: Mapping[str, Any] | None,
        columns: Mapping[str, Sequence[str]] | None,
        keep_columns: bool | Sequence[str],
    ) -> None:
        self.model = load_source(source, options)
        self.columns = {k: [v] if isinstance(v, str) else list(v) for k, v in (columns or {}).items()}
        self.keep_columns = keep_columns

    def inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs taken from a batch's columns (see the module docstring for the rules)."""
        specs = self.model.schema.inputs
        out: dict[str, np.ndarray] = {}
        for spec in specs:
            if spec.name in self.columns:
                missing = [c for c in self.columns[spec.name] if c not in batch]
                if missing:
                    raise SchemaError(
                        f"input {spec.name!r}: columns {missing} are not in the data; columns are {sorted(batch)}",
                        tensor=spec.name,
                    )
                out[spec.name] = np.stack([_dense(batch[c]) for c in self.columns[spec.name]], axis=1)
            elif spec.name in batch:
                out[spec.name] = _dense(batch[spec.name])
            elif len(specs) == 1:
                cols = ["data"] if "data" in batch else list(batch)
                arrays = [_dense(batch[c]) for c in cols]
                out[spec.name] = arrays[0] if len(arrays) == 1 and arrays[0].ndim > 1 else np.stack(arrays, axis=1)
            else:
                raise SchemaError(
                    f"input {spec.name!r} is not a column of the data (columns are {sorted(batch)}); "
                    f"pass columns={{{spec.name!r}: [...]}}",
                    tensor=spec.name,
                )
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        predictions = self.model.predict(self.inputs(batch))
        keep = self.keep_columns
        if keep is True or keep is False:
            kept = dict(batch) if keep else {}
        else:
            missing = [k for k in keep if k not in batch]
            if missing:
                raise SchemaError(f"keep_columns {missing} are not in the data; columns are {sorted(batch)}")
            kept = {k: batch[k] for k in keep}
        return kept | predictions  # an output named like a kept column replaces it


def _aimass_cause(error: BaseException) -> AimassError | None:
    """The aimass error (bad input, model failure) that failed a Ray task, rebuilt on the driver.

    Ray Data sends a UDF's exception back as text inside ``UserCodeException``; the last
    ``aimass.errors.<Class>: <message>`` line of that text names the class and message.
    """
    from aimass import errors

    found = None
    for match in _RAISED.finditer(str(error)):
        found = match
    if found is None:
        return None
    klass = getattr(errors, found["cls"], None)
    message = found["message"].strip()
    if klass is SchemaError:
        tensor = _TENSOR.match(message)
        return SchemaError(message, tensor=tensor.group(1) if tensor else None)
    if not (isinstance(klass, type) and issubclass(klass, AimassError)):
        return None
    try:
        return klass(message)
    except TypeError:  # a class whose constructor needs more than a message
        return None


def _dense(column: np.ndarray) -> np.ndarray:
    # Parquet list columns arrive as object arrays of per-row arrays.
    if column.dtype == object and len(column) and isinstance(column[0], np.ndarray):
        return np.stack(list(column))
    return column


def read_dataset(data: Any, *, format: str | None = None, blocks: int = 1) -> Any:
    """A ``ray.data.Dataset`` from a Dataset, a numpy array, or a path of Parquet/CSV/``.npy`` files.

    A numpy array is cut into ``blocks`` blocks, so that several actors have work.

    Example:
        >>> read_dataset("rows/", format="parquet").count()   # doctest: +SKIP
    """
    rd = ray_module("ray.data")
    if isinstance(data, rd.Dataset):
        return data
    if isinstance(data, np.ndarray):
        return rd.from_numpy(np.array_split(data, max(1, min(blocks, len(data)))) if data.ndim else data)
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"batch_predict reads a ray Dataset, a numpy array or a path, not {type(data).__name__}")
    path = str(data)
    suffix = f".{format.lower().lstrip('.')}" if format else Path(path).suffix.lower()
    if not suffix and Path(path).is_dir():
        suffixes = {p.suffix.lower() for p in Path(path).iterdir() if p.suffix.lower() in _READERS}
        if len(suffixes) != 1:
            raise ValueError(f"{path}: cannot tell the format from the files in it; pass format='parquet'|'csv'|'npy'")
        suffix = suffixes.pop()
    reader = _READERS.get(suffix)
    if reader is None:
        raise ValueError(f"{path}: unknown data format {suffix!r}; use Parquet, CSV or .npy (or pass format=)")
    return getattr(rd, reader)(path)


def actor_cpus(
    actors: int | tuple[int, int], num_cpus: float | None, free: float, total: float
) -> tuple[int | tuple[int, int], float]:
    """``(actors, num_cpus)`` that a cluster with ``free`` CPUs can place, leaving a CPU for reading and writing.

    Ray Data's read and write tasks take 1 CPU each; actors holding every CPU leave them none and
    the job waits forever. So the actors get ``free - 1`` CPUs (half the CPUs on a one-CPU
    cluster). ``num_cpus`` None: each actor gets a share that fits the largest pool (1 CPU at
    most). Given: a pool whose fewest actors do not fit raises PlacementError; a ``(min, max)``
    pool whose most do not fit is shrunk to what fits, with a warning.

    Example:
        >>> actor_cpus(2, None, free=2.0, total=2.0)
        (2, 0.5)
        >>> actor_cpus((1, 4), 0.5, free=2.0, total=2.0)
        ((1, 2), 0.5)
    """
    reserve = min(1.0, total / 2)
    room = free - reserve
    said = f"for actors ({reserve:g} left to read and write)"
    if isinstance(actors, int):
        return actors, fit_cpus(actors, num_cpus, free=room, total=total, what=f"{actors} actors", room=said)
    low, high = actors
    if num_cpus is None:
        return actors, fit_cpus(high, None, free=room, total=total, what=f"{high} actors", room=said)
    share = fit_cpus(max(low, 1), num_cpus, free=room, total=total, what=f"{max(low, 1)} actors", room=said)
    fits = max(low, 1, int((room + 1e-9) // share)) if share else high
    if fits < high:
        logger.warning(
            "an actor pool of up to %d actors x %g CPU needs %g CPUs; %g are free for actors (one CPU is left to "
            "Ray Data's read and write tasks), so the pool grows to %d at most",
            high, share, high * share, room, fits,
        )  # fmt: skip
        return (low, fits), share
    return actors, share


def batch_predict(
    model: Any,
    data: Any,
    output: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 1024,
    actors: int | tuple[int, int] = 1,
    num_cpus: float | None = None,
    columns: Mapping[str, str | Sequence[str]] | None = None,
    keep_columns: bool | Sequence[str] = True,
    format: str | None = None,
    progress: bool = True,
    preserve_order: bool = True,
    model_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
) -> Any:
    """Predict every row of ``data`` with ``model`` on Ray; writes Parquet to ``output`` or returns a Dataset.

    ``model``: a ``Model``, a model file, a package, a library reference or a V2 URL. ``actors``:
    pool size, or ``(min, max)`` for a pool Ray Data grows with the backlog; each actor reserves
    ``num_cpus`` (None: a share that fits, see :func:`actor_cpus`; a pool the cluster cannot place
    raises :class:`~aimass.errors.PlacementError` at once instead of waiting). ``batch_size``
    rows go to each model call. ``progress`` shows Ray Data's
    progress bars; ``preserve_order`` keeps output rows in input order. Runs now: with ``output``
    the Parquet files are written and the path returned, without it a materialized Dataset comes back.

    Example:
        >>> ds = batch_predict(Model.load("mlp.onnx"), np.random.rand(10_000, 4).astype("float32"))   # doctest: +SKIP
        >>> ds.to_pandas().head()                                                                    # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = bundle(model, options=model_options)
    connect(**dict(init_options or {}))
    # Against all the cluster's CPUs, not those free now: a job that just ended (or failed) may hold its
    # actors' CPUs a while longer, and Ray Data waits for them; a pool larger than the cluster never starts.
    _, total = cluster_cpus(wait=0)
    actors, num_cpus = actor_cpus(actors, num_cpus, total, total)
    rd = ray_module("ray.data")
    pool = (
        rd.ActorPoolStrategy(size=actors)
        if isinstance(actors, int)
        else rd.ActorPoolStrategy(min_size=actors[0], max_size=actors[1])
    )
    ctx = rd.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.execution_options.preserve_order
    ctx.enable_progress_bars, ctx.execution_options.preserve_order = progress, preserve_order
    most = actors if isinstance(actors, int) else actors[1]
    blocks = min(-(-len(data) // batch_size), 4 * most) if isinstance(data, np.ndarray) and data.ndim else 1
    try:
        predicted = read_dataset(data, format=format, blocks=blocks).map_batches(
            Predictor,
            fn_constructor_args=(source, dict(model_options) if model_options else None, columns, keep_columns),
            batch_size=batch_size,
            batch_format="numpy",
            compute=pool,
            num_cpus=num_cpus,
            udf_modifying_row_count=False,
        )
        # A Dataset made before this call carries the context of its own creation.
        predicted.context.enable_progress_bars = progress
        predicted.context.execution_options.preserve_order = preserve_order
        if output is None:
            return predicted.materialize()
        predicted.write_parquet(str(output))
        return str(output)
    except Exception as e:
        typed = _aimass_cause(e)
        if typed is None:
            raise
        raise typed from e
    finally:
        ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved
