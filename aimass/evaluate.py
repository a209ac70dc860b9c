"""Evaluate a Model on labelled data: quality metrics, latency and throughput, and gates over them.

:func:`evaluate` runs the model once over the data (in batches) for quality and throughput, and a
few hundred single-row calls for latency percentiles. Quality metrics come from scikit-learn.
Classification outputs are read from ``label``/``probabilities`` when the model has them,
otherwise from its first 2-D float output (logits are turned into probabilities with a softmax).

A gate is a mapping of metric to condition, ``{"accuracy": ">=0.9", "latency_p99_ms": "<20"}``;
:func:`check_gate` lists what fails. The model library refuses to move an alias to a version
whose recorded metrics fail its gate.

Example:
    >>> from aimass.evaluate import evaluate
    >>> result = evaluate(model, x_test, y_test)          # doctest: +SKIP
    >>> result["accuracy"], result["latency_p99_ms"]      # doctest: +SKIP
    (0.97, 0.21)
    >>> result.check({"accuracy": ">=0.9"})               # doctest: +SKIP
    []
"""

from __future__ import annotations

import dataclasses
import html
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass import charts
from aimass.dependencies import require
from aimass.errors import GateFailed, SchemaError, StoreError
from aimass.measure import time_calls
from aimass.training import looks_like_probabilities

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "Evaluation",
    "check_gate",
    "evaluate",
    "parse_gate",
    "require_gate",
]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mse", "mae", "r2")
SPEED_METRICS = ("latency_p50_ms", "latency_p99_ms", "throughput_rps")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+|nan|inf)\s*$")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one data set; ``result["accuracy"]`` reads a metric.

    Example:
        >>> Evaluation(task="regression", rows=3, metrics={"mse": 0.5})["mse"]
        0.5
    """

    task: str
    rows: int
    metrics: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def check(self, gate: Mapping[str, str]) -> list[str]:
        """The conditions of ``gate`` these metrics fail (empty when all pass)."""
        return check_gate(self.metrics, gate)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "metrics": dict(self.metrics)}

    def svg(self) -> str:
        """The metrics as an SVG bar chart (the same chart the dashboard shows for a version).

        Example:
            >>> Evaluation(task="regression", rows=3, metrics={"mse": 0.5}).svg().startswith("<svg")
            True
        """
        return charts.bars(self.metrics, title=f"{self.task} metrics on {self.rows} rows")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{_fmt(v)}</td></tr>"
            for k, v in self.metrics.items()
        )
        return (
            f"<div><b>Evaluation</b> &middot; {html.escape(self.task)} &middot; {self.rows} rows"
            f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>{self.svg()}</div>"
        )

    def __str__(self) -> str:
        width = max((len(k) for k in self.metrics), default=0)
        lines = [f"{self.task}, {self.rows} rows"]
        lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in self.metrics.items()]
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- gates ------------------------------------------------------------------------------------


def parse_gate(gate: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``{"accuracy": ">=0.9"}`` -> ``[("accuracy", ">=", 0.9)]``; a bare number means ``>=``.

    Example:
        >>> parse_gate({"accuracy": ">=0.9", "latency_p99_ms": "<20"})
        [('accuracy', '>=', 0.9), ('latency_p99_ms', '<', 20.0)]
    """
    out = []
    for metric, condition in gate.items():
        if isinstance(condition, (int, float)) and not isinstance(condition, bool):
            out.append((str(metric), ">=", float(condition)))
            continue
        match = _CONDITION.match(str(condition))
        if not match:
            raise StoreError(
                f"gate {metric!r}: condition {condition!r} is not '<op><number>' with op one of {sorted(_OPS)}"
            )
        out.append((str(metric), match.group(1), float(match.group(2))))
    return out


def check_gate(metrics: Mapping[str, Any], gate: Mapping[str, Any]) -> list[str]:
    """The failing conditions of ``gate`` against ``metrics``; a metric that was not recorded fails.

    Example:
        >>> check_gate({"accuracy": 0.8}, {"accuracy": ">=0.9", "f1": ">0.5"})
        ['accuracy 0.8 is not >= 0.9', 'f1 was not recorded']
    """
    failures = []
    for metric, op, bound in parse_gate(gate):
        value = metrics.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            failures.append(f"{metric} was not recorded")
        elif math.isnan(float(value)) or not _OPS[op](float(value), bound):
            failures.append(f"{metric} {_fmt(float(value))} is not {op} {_fmt(bound)}")
    return failures


def require_gate(metrics: Mapping[str, Any], gate: Mapping[str, Any] | None, *, what: str) -> None:
    """Raise :class:`~aimass.errors.GateFailed` naming ``what`` when ``metrics`` fail ``gate``."""
    if not gate:
        return
    failures = check_gate(metrics, gate)
    if failures:
        raise GateFailed(f"{what} fails its gate: {'; '.join(failures)}", failures=failures)


def _sklearn_metrics() -> Any:
    return require("sklearn.metrics", feature="evaluate()", extra="store", package="scikit-learn")


# -- evaluation -------------------------------------------------------------------------------


def evaluate(
    model: Model | Any,
    data: Any,
    labels: Any,
    metrics: Iterable[str] | None = None,
    *,
    task: str | None = None,
    output: str | None = None,
    batch_size: int = 256,
    latency_calls: int = 200,
    latency_seconds: float = 2.0,
    progress: bool | None = False,
) -> Evaluation:
    """Score ``model`` on ``data`` against ``labels``; returns an :class:`Evaluation`.

    ``metrics`` defaults to every quality metric of the task (classification when the labels are
    integers or bools, regression otherwise; ``task=`` overrides) plus ``latency_p50_ms``,
    ``latency_p99_ms`` (single-row calls, at most ``latency_calls`` or ``latency_seconds``) and
    ``throughput_rps`` (rows per second over the batched pass). ``output`` picks the output to
    score when the model has several. ``model`` is a :class:`~aimass.Model` or anything
    ``Model.load`` takes (a fitted estimator, a file): it is loaded first.

    Example:
        >>> evaluate(model, x, y, metrics=["accuracy", "f1"]).metrics   # doctest: +SKIP
        {'accuracy': 0.95, 'f1': 0.94}
    """
    from aimass.model import Model

    if not isinstance(model, Model):  # a raw XGBClassifier has no predict_batch: load it as users do
        model = Model.load(model)
    y = np.asarray(labels)
    if task is None:
        task = "classification" if y.dtype.kind in "biu" else "regression"
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    quality = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    wanted = list(metrics) if metrics is not None else [*quality, *SPEED_METRICS]
    unknown = [m for m in wanted if m not in quality and m not in SPEED_METRICS]
    if unknown:
        raise ValueError(f"unknown {task} metrics {unknown}; known: {[*quality, *SPEED_METRICS]}")

    start = time.perf_counter()
    outputs = model.predict_batch(data, batch_size=batch_size, progress=progress)
    elapsed = time.perf_counter() - start
    rows = int(y.shape[0])
    if rows == 0:
        raise SchemaError("evaluate needs at least one labelled row")

    result: dict[str, float] = {}
    if task == "classification":
        result.update(_classification(outputs, y, [m for m in wanted if m in quality], output))
    else:
        result.update(_regression(outputs, y, [m for m in wanted if m in quality], output))
    if "throughput_rps" in wanted:
        result["throughput_rps"] = rows / elapsed if elapsed > 0 else float("inf")
    if "latency_p50_ms" in wanted or "latency_p99_ms" in wanted:
        p50, p99 = _latency(model, data, latency_calls, latency_seconds)
        if "latency_p50_ms" in wanted:
            result["latency_p50_ms"] = p50
        if "latency_p99_ms" in wanted:
            result["latency_p99_ms"] = p99
    ordered = {m: result[m] for m in wanted if m in result}
    return Evaluation(task=task, rows=rows, metrics=ordered)


def _pick(outputs: Mapping[str, np.ndarray], output: str | None, *, prefer: tuple[str, ...]) -> np.ndarray:
    if output is not None:
        if output not in outputs:
            raise SchemaError(f"model has no output {output!r}; outputs are {sorted(outputs)}", tensor=output)
        return outputs[output]
    for name in prefer:
        if name in outputs:
            return outputs[name]
    floats = [v for v in outputs.values() if v.dtype.kind == "f"]
    return (floats or list(outputs.values()))[0]


def _probabilities(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    if scores.ndim == 1:  # one score per row: a binary probability when in [0, 1], else a logit
        p1 = scores if scores.min() >= 0 and scores.max() <= 1 else 1 / (1 + np.exp(-scores))
        return np.stack([1 - p1, p1], axis=1)
    if looks_like_probabilities(scores):
        return scores / scores.sum(axis=1)[:, None]  # float32 rounding: make rows sum to one exactly for log loss
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))  # logits: softmax
    return shifted / shifted.sum(axis=1, keepdims=True)


def _classification(
    outputs: Mapping[str, np.ndarray], y: np.ndarray, wanted: list[str], output: str | None
) -> dict[str, float]:
    skm = _sklearn_metrics()

    scores = _pick(outputs, output, prefer=("probabilities", "probability", "logits"))
    if scores.dtype.kind in "biu" and scores.ndim == 1:  # a label output only: no probabilities
        proba = None
        pred = scores.astype(np.int64)
    else:
        proba = _probabilities(scores)
        pred = proba.argmax(axis=1)
    y = y.reshape(-1).astype(np.int64)
    if pred.shape[0] != y.shape[0]:
        raise SchemaError(f"model returned {pred.shape[0]} predictions for {y.shape[0]} labels")
    binary = proba.shape[1] == 2 if proba is not None else set(np.unique(np.concatenate([y, pred]))) <= {0, 1}
    average = "binary" if binary else "macro"
    out: dict[str, float] = {}
    for name in wanted:
        if name == "accuracy":
            out[name] = float(skm.accuracy_score(y, pred))
        elif name in ("precision", "recall", "f1"):
            fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[name]
            out[name] = float(fn(y, pred, average=average, zero_division=0))
        elif proba is None:
            out[name] = float("nan")  # needs probabilities the model does not give
        elif name == "roc_auc":
            out[name] = _roc_auc(y, proba)
        elif name == "log_loss":
            out[name] = float(skm.log_loss(y, np.clip(proba, 1e-15, 1), labels=list(range(proba.shape[1]))))
    return out


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    skm = _sklearn_metrics()

    present = np.unique(y)
    if len(present) < 2:
        return float("nan")  # undefined with one class in the labels
    if proba.shape[1] == 2:
        return float(skm.roc_auc_score(y, proba[:, 1]))
    # One-vs-rest over the classes present in the labels, renormalised over them.
    sub = proba[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return float(skm.roc_auc_score(y == present[1], sub[:, 1]))
    return float(skm.roc_auc_score(y, sub, multi_class="ovr", labels=present))


def _regression(
    outputs: Mapping[str, np.ndarray], y: np.ndarray, wanted: list[str], output: str | None
) -> dict[str, float]:
    skm = _sklearn_metrics()

    pred = _pick(outputs, output, prefer=("prediction", "predictions", "output")).astype(np.float64)
    y = y.astype(np.float64)
    if pred.ndim == 2 and pred.shape[1] == 1 and y.ndim == 1:
        pred = pred[:, 0]
    if pred.shape != y.shape:
        raise SchemaError(f"model output shape {list(pred.shape)} does not match labels shape {list(y.shape)}")
    fns = {"mse": skm.mean_squared_error, "mae": skm.mean_absolute_error, "r2": skm.r2_score}
    return {name: float(fns[name](y, pred)) for name in wanted}


def _latency(model: Model, data: Any, calls: int, seconds: float) -> tuple[float, float]:
    named = model.schema.named(data)
    row = {k: np.asarray(v)[:1] for k, v in named.items()}
    model.predict(row)  # warm-up: first calls pay allocations and lazy initialisation
    ms = time_calls(lambda: model.predict(row), seconds=seconds, min_calls=10, max_calls=max(calls, 1)) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
