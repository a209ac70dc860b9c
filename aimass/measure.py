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

__all__ = ["Drift", "batch_of", "compare_outputs", "human_size", "sample_inputs", "score_outputs", "time_calls"]


def human_size(n: float) -> str:
    """Bytes in binary units (KiB, MiB, GiB): one unit convention for every report and listing."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def sample_inputs(schema: Schema, data: Any = None, rows: int = 64) -> tuple[dict[str, np.ndarray], str]:
    """The caller's data validated against ``schema``, or ``rows`` generated rows; and which it was."""
    if data is not None:
        return schema.coerce(data), "user"
    return schema.example(batch=rows, seed=0), "generated"


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


def time_calls(call: Callable[[], Any], *, seconds: float, min_calls: int, max_calls: int | None = None) -> np.ndarray:
    """Seconds taken by each of repeated ``call()``: at least ``min_calls``, then until ``seconds`` have
    passed (or ``max_calls`` were made). The caller warms up first; this only times.

    Example:
        >>> len(time_calls(lambda: None, seconds=0.0, min_calls=3))
        3
    """
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


def score_outputs(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> tuple[str, float, bool]:
    """(name, value, higher_is_better) of the first output that ``labels`` can score: accuracy or mse.

    Example:
        >>> score_outputs({"y": np.array([[0.1, 0.9], [0.8, 0.2]])}, np.array([1, 1]))
        ('accuracy', 0.5, True)
    """
    labels = np.asarray(labels)
    for value in outputs.values():
        if value.shape[:1] != labels.shape[:1]:
            continue
        if labels.dtype.kind in "iub":
            if value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] > 1:
                return "accuracy", float((value.argmax(axis=1) == labels.reshape(-1)).mean()), True
            if value.dtype.kind in "iub" and value.size == labels.size:
                return "accuracy", float((value.reshape(-1) == labels.reshape(-1)).mean()), True
        elif value.dtype.kind == "f" and value.size == labels.size:
            return "mse", float(np.mean((value.reshape(-1) - labels.reshape(-1).astype(np.float64)) ** 2)), False
    raise ValueError(f"labels of shape {list(labels.shape)} match no output's rows to score")
