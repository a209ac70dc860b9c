"""Measuring models against each other: output drift, sample inputs, sizes; shared by every feature.

compress, convert, evaluate and the framework tools that choose between recipes (onnx int8)
measure with these, so "drift", "cosine" and sizes mean the same everywhere. Everything here
works on schemas and arrays, not on Models, so framework code below the Model layer can use it.

Example:
    >>> import numpy as np
    >>> [d.max_abs_error for d in compare_outputs({"y": np.ones((2, 3))}, {"y": np.ones((2, 3))})]
    [0.0]
    >>> human_size(3 * 1024 * 1024)
    '3.00 MiB'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from aimass.schema import Schema

__all__ = [
    "SETTLE_S",
    "Drift",
    "batch_of",
    "compare_outputs",
    "example_rows",
    "generated_rows",
    "human_size",
    "recall_at_k",
    "sample_inputs",
    "score_outputs",
    "time_calls",
]


def human_size(n: float) -> str:
    """Bytes in binary units (KiB, MiB, GiB): one unit convention for every report and listing."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def sample_inputs(
    schema: Schema, data: Any = None, rows: int = 64, *, example: Mapping[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """The inputs a check runs on, and which they are: ``"user"``, ``"example"`` or ``"generated"``.

    The caller's ``data`` validated against ``schema``; else the model's load-time ``example``
    (:func:`example_rows`); else ``rows`` rows generated from the schema.

    Example:
        >>> from aimass.schema import TensorSpec
        >>> s = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 2])])
        >>> x, source = sample_inputs(s, example={"x": np.ones((2, 2), np.float32)})
        >>> source, x["x"].shape
        ('example', (4, 2))
    """
    if data is not None:
        return schema.coerce(data), "user"
    if example:
        return example_rows(schema, example), "example"
    return schema.example(batch=rows, seed=0), "generated"


def _is_mask(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub" and bool(values.size) and bool(np.isin(values, (0, 1)).all())


def example_rows(schema: Schema, example: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """The example's rows, then a varied copy of them where varying is safe.

    Float inputs of the copy get noise of 1% of the input's spread; integer and boolean inputs
    (token ids, masks, categories) are repeated unchanged, since nothing tells what other values
    would mean. A one-row example thus gives two rows, a two-row example four.

    Example:
        >>> from aimass.schema import TensorSpec
        >>> s = Schema(inputs=[TensorSpec(name="ids", dtype="INT64", shape=[-1, 3])])
        >>> example_rows(s, {"ids": np.array([[101, 7, 102]])})["ids"].tolist()
        [[101, 7, 102], [101, 7, 102]]
    """
    rng = np.random.default_rng(seed)
    base = schema.coerce(dict(example))
    out = {}
    for name, value in base.items():
        varied = value
        if value.dtype.kind == "f" and value.size:
            spread = float(value.std()) or 1.0
            varied = (value + rng.standard_normal(value.shape) * 0.01 * spread).astype(value.dtype)
        out[name] = np.concatenate([value, varied]) if value.ndim else value
    return out


def generated_rows(
    schema: Schema, rows: int = 64, *, example: Mapping[str, np.ndarray] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """``rows`` generated rows that stay in what the schema and ``example`` tell about each input.

    With an example: integer inputs are drawn between the smallest and largest value it holds
    (a 0/1 input, such as an attention mask, takes whole rows of the example so that masks keep
    their shape), float inputs from a normal with its mean and spread. Without one, as
    :meth:`~aimass.schema.Schema.example` (floats standard normal, integers zero).

    Example:
        >>> from aimass.schema import TensorSpec
        >>> s = Schema(inputs=[TensorSpec(name="ids", dtype="INT64", shape=[-1, 3])])
        >>> ids = generated_rows(s, 8, example={"ids": np.array([[101, 7, 102]])})["ids"]
        >>> bool(ids.min() >= 7 and ids.max() <= 102)
        True
    """
    plain = schema.example(batch=rows, seed=seed)
    if not example:
        return plain
    rng = np.random.default_rng(seed)
    known = schema.coerce(dict(example))
    n = next(iter(known.values())).shape[0] if known and next(iter(known.values())).ndim else 0
    picks = rng.integers(0, max(n, 1), size=rows)
    out = {}
    for spec in schema.inputs:
        value = known.get(spec.name)
        shape = plain[spec.name].shape
        if value is None or not value.size or value.ndim == 0 or value.shape[1:] != shape[1:]:
            out[spec.name] = plain[spec.name]
        elif _is_mask(value):
            out[spec.name] = value[picks]
        elif value.dtype.kind in "iu":
            out[spec.name] = rng.integers(int(value.min()), int(value.max()) + 1, size=shape).astype(value.dtype)
        elif value.dtype.kind == "f":
            mean, std = float(value.mean()), float(value.std()) or 1.0
            out[spec.name] = (mean + std * rng.standard_normal(shape)).astype(value.dtype)
        else:
            out[spec.name] = value[picks]
    return out


class Drift(BaseModel):
    """How far one output moved, measured on the same inputs.

    ``cosine`` is the mean over rows of the cosine similarity of each row's flattened output
    (``min_cosine`` the worst row); ``top1_agreement`` is the share of rows whose argmax (2-D float
    outputs) or value (integer outputs) is unchanged. ``tolerance`` is the allowed max abs error
    (conversions only).
    """

    output: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None
    tolerance: float | None = None

    @property
    def passed(self) -> bool:
        """Within ``tolerance`` (always true when there is none)."""
        return self.tolerance is None or self.max_abs_error <= self.tolerance


def batch_of(inputs: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """``size`` rows of ``inputs``, repeating rows when there are fewer."""
    out = {}
    for k, v in inputs.items():
        n = v.shape[0] if v.ndim else 0
        out[k] = v[:size] if n >= size else np.take(v, np.arange(size) % max(n, 1), axis=0)
    return out


def compare_outputs(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    *,
    atol: float | None = None,
    rtol: float = 0.0,
) -> list[Drift]:
    """Drift of every output of ``before`` that ``after`` also has (same name, same shape).

    With ``atol``, each float output gets ``tolerance = atol + rtol * max |before|``; integer
    outputs must match exactly (tolerance 0).
    """
    drifts = []
    for name, ref in before.items():
        if name not in after:
            continue  # e.g. a distilled student keeps only the scores, not the teacher's labels
        got = after[name]
        if got.shape != ref.shape:
            raise ValueError(f"output {name!r}: shape {list(got.shape)} differs from the original's {list(ref.shape)}")
        if ref.dtype.kind in "OSU":  # BYTES (labels): an element either matches or it does not
            same = float((ref == got).mean()) if ref.size else 1.0
            drifts.append(
                Drift(
                    output=name,
                    max_abs_error=0.0 if same == 1.0 else 1.0,
                    mean_abs_error=1.0 - same,
                    top1_agreement=same,
                    tolerance=None if atol is None else 0.0,
                )
            )
            continue
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        err = np.abs(ref64 - got64)
        d: dict[str, Any] = {
            "output": name,
            "max_abs_error": float(err.max()) if err.size else 0.0,
            "mean_abs_error": float(err.mean()) if err.size else 0.0,
        }
        if ref.dtype.kind == "f" and ref.ndim >= 1 and ref.size:
            a = ref64.reshape(ref.shape[0], -1)
            b = got64.reshape(ref.shape[0], -1)
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            # Rows that are zero in both are identical; one zero row against a non-zero one is cosine 0.
            cos = np.where(
                (na == 0) & (nb == 0), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, np.finfo(np.float64).tiny)
            )
            d["cosine"], d["min_cosine"] = float(cos.mean()), float(cos.min())
            if ref.ndim == 2 and ref.shape[1] > 1:
                d["top1_agreement"] = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
            if atol is not None:
                d["tolerance"] = atol + rtol * float(np.abs(ref64).max())
        elif ref.dtype.kind in "iub" and ref.size:
            d["top1_agreement"] = float((ref == got).mean())
            if atol is not None:
                d["tolerance"] = 0.0
        drifts.append(Drift(**d))
    return drifts


# After a call, onnxruntime's worker threads spin before they sleep, and on a small machine they
# keep spinning while another model runs: timed right after another model, a call shares the cores
# with them (int8 MiniLM, 2 threads on 2 cores, calls back to back: 3.7 -> 7.8 ms at batch 1,
# sustained over many calls; 104 -> 134 ms for the first call at batch 32). Idle 60 ms, they stop.
SETTLE_S = 0.06


def time_calls(
    call: Callable[[], Any],
    *,
    seconds: float,
    min_calls: int,
    max_calls: int | None = None,
    settle: bool = False,
) -> np.ndarray:
    """Seconds taken by each of repeated ``call()``: at least ``min_calls``, then until ``seconds`` have
    passed (or ``max_calls`` were made). The caller warms up first (unless ``settle``); this only times.

    ``settle=True`` is for timing several models in turns: it first pauses :data:`SETTLE_S` (the
    previous model's idle threads stop spinning) and makes one untimed call (this one's wake up),
    so each model is timed as it runs alone.

    Example:
        >>> len(time_calls(lambda: None, seconds=0.0, min_calls=3))
        3
    """
    if settle:
        time.sleep(SETTLE_S)
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while max_calls is None or len(times) < max_calls:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 > deadline and len(times) >= min_calls:
            break
    return np.asarray(times)


def recall_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Share of rows with a same-label row among their ``k`` nearest neighbours (cosine, itself excluded).

    Rows whose label no other row has are left out (nothing to find). For embeddings, where
    labels name groups (paraphrases, topics, the same product) rather than output columns.

    Example:
        >>> e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> recall_at_k(e, np.array([0, 0, 1, 1]), k=1)
        1.0
    """
    x = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    y = np.asarray(labels).reshape(-1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    k = max(1, min(k, len(x) - 1))
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    counts = np.unique(y, return_counts=True)
    findable = np.isin(y, counts[0][counts[1] > 1])
    if not findable.any():
        raise ValueError("recall@k needs labels shared by at least two rows")
    hits = (y[nearest] == y[:, None]).any(axis=1)
    return float(hits[findable].mean())


def score_outputs(
    outputs: Mapping[str, np.ndarray], labels: np.ndarray, *, metric: str | None = None
) -> tuple[str, float, bool]:
    """(name, value, higher_is_better) of the first output that ``labels`` can score.

    ``accuracy`` for integer labels of class scores, ``mse`` for float labels, ``recall@k`` (see
    :func:`recall_at_k`) for integer labels of embeddings: when ``metric="recall@10"`` says so, or
    when a label is too large to be a column of the output.

    Example:
        >>> score_outputs({"y": np.array([[0.1, 0.9], [0.8, 0.2]])}, np.array([1, 1]))
        ('accuracy', 0.5, True)
    """
    labels = np.asarray(labels)
    if metric is not None and not (metric in ("accuracy", "mse") or metric.startswith("recall@")):
        raise ValueError(f"metric must be 'accuracy', 'mse' or 'recall@<k>', got {metric!r}")
    for value in outputs.values():
        if value.shape[:1] != labels.shape[:1]:
            continue
        embedding = value.dtype.kind == "f" and value.ndim == 2 and labels.dtype.kind in "iu"
        if embedding and (
            (metric or "").startswith("recall@") or (metric is None and labels.size and labels.max() >= value.shape[1])
        ):
            k = int((metric or "recall@10").split("@", 1)[1])
            return f"recall@{k}", recall_at_k(value, labels, k), True
        if labels.dtype.kind in "iub":
            if value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] > 1:
                return "accuracy", float((value.argmax(axis=1) == labels.reshape(-1)).mean()), True
            if value.dtype.kind in "iub" and value.size == labels.size:
                return "accuracy", float((value.reshape(-1) == labels.reshape(-1)).mean()), True
        elif value.dtype.kind == "f" and value.size == labels.size:
            return "mse", float(np.mean((value.reshape(-1) - labels.reshape(-1).astype(np.float64)) ** 2)), False
    raise ValueError(f"labels of shape {list(labels.shape)} match no output's rows to score")
