"""What each task turns the network's output into: labels and probabilities, embeddings, token labels.

A :class:`Task` names the network output it reads (``logits`` or ``last_hidden_state``), the
transformers Auto class that loads its weights, the class-name endings that identify it, the
outputs it declares and the numpy code that finishes them. The head logic is plain numpy, so it
runs the same whether the network runs on torch or on onnxruntime.

Example:
    >>> TASKS["text-classification"].network_output
    'logits'
    >>> task_for_class("BertForSequenceClassification").name
    'text-classification'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aimass.errors import ModelLoadError
from aimass.schema import DType, TensorSpec

__all__ = ["TASKS", "Task", "task_for_class"]


@dataclasses.dataclass(frozen=True)
class Head:
    """What a task needs to know about the model: labels (by class index), width, problem type."""

    labels: tuple[str, ...] = ()
    hidden_size: int = 0
    multi_label: bool = False


Finish = Callable[[np.ndarray, np.ndarray, Sequence[Any], Head], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: the network output it reads, how to load its weights, its outputs and how to make them."""

    name: str
    network_output: str
    auto_class: str
    class_suffixes: tuple[str, ...]
    outputs: Callable[[Head], list[TensorSpec]]
    finish: Finish


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _label_array(labels: tuple[str, ...], index: np.ndarray) -> np.ndarray:
    out = np.empty(index.shape, dtype=object)
    flat = out.reshape(-1)
    for i, k in enumerate(index.reshape(-1).tolist()):
        flat[i] = labels[k] if k < len(labels) else f"LABEL_{k}"
    return out


def _classify(logits: np.ndarray, mask: np.ndarray, encodings: Sequence[Any], head: Head) -> dict[str, np.ndarray]:
    logits = logits.astype(np.float32, copy=False)
    # As transformers' pipeline does: independent sigmoids for multi-label models, softmax otherwise.
    probabilities = _sigmoid(logits) if head.multi_label else _softmax(logits)
    return {"label": _label_array(head.labels, probabilities.argmax(axis=-1)), "probabilities": probabilities}


def _embed(hidden: np.ndarray, mask: np.ndarray, encodings: Sequence[Any], head: Head) -> dict[str, np.ndarray]:
    # Mean over the real tokens (padding masked out), then unit length: cosine = dot product.
    m = mask[..., None].astype(np.float32)
    summed = (hidden.astype(np.float32, copy=False) * m).sum(axis=1)
    pooled = summed / np.maximum(m.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return {"embedding": (pooled / np.maximum(norms, 1e-12)).astype(np.float32)}


def _tag(logits: np.ndarray, mask: np.ndarray, encodings: Sequence[Any], head: Head) -> dict[str, np.ndarray]:
    best = logits.argmax(axis=-1)
    rows: list[tuple[list[str], list[str]]] = []
    for i, enc in enumerate(encodings):
        keep = [
            j for j, (m, s) in enumerate(zip(enc.attention_mask, enc.special_tokens_mask, strict=True)) if m and not s
        ]
        rows.append(([enc.tokens[j] for j in keep], _label_array(head.labels, best[i, keep]).tolist()))
    width = max((len(t) for t, _ in rows), default=0)
    tokens = np.full((len(rows), width), "", dtype=object)
    labels = np.full((len(rows), width), "", dtype=object)
    for i, (t, lab) in enumerate(rows):
        tokens[i, : len(t)] = t
        labels[i, : len(lab)] = lab
    return {"tokens": tokens, "labels": labels}


TASKS: dict[str, Task] = {
    "text-classification": Task(
        name="text-classification",
        network_output="logits",
        auto_class="AutoModelForSequenceClassification",
        class_suffixes=("ForSequenceClassification",),
        outputs=lambda h: [
            TensorSpec(name="label", dtype=DType.BYTES, shape=[-1]),
            TensorSpec(name="probabilities", dtype=DType.FP32, shape=[-1, len(h.labels)]),
        ],
        finish=_classify,
    ),
    "feature-extraction": Task(
        name="feature-extraction",
        network_output="last_hidden_state",
        auto_class="AutoModel",
        class_suffixes=("Model",),
        outputs=lambda h: [TensorSpec(name="embedding", dtype=DType.FP32, shape=[-1, h.hidden_size])],
        finish=_embed,
    ),
    "token-classification": Task(
        name="token-classification",
        network_output="logits",
        auto_class="AutoModelForTokenClassification",
        class_suffixes=("ForTokenClassification",),
        # Per token, padded with "" after each text's last token (special tokens left out).
        outputs=lambda h: [
            TensorSpec(name="tokens", dtype=DType.BYTES, shape=[-1, -1]),
            TensorSpec(name="labels", dtype=DType.BYTES, shape=[-1, -1]),
        ],
        finish=_tag,
    ),
}


def task_for_class(class_name: str) -> Task:
    """The task a transformers model class serves, by its name (``BertForSequenceClassification``)."""
    for task in TASKS.values():
        if class_name.endswith(task.class_suffixes) and not class_name.startswith("PreTrained"):
            return task
    raise ModelLoadError(
        f"aimass serves transformers text models for {sorted(TASKS)}; a {class_name} is none of these "
        "(sequence classification, token classification or a bare encoder such as BertModel)"
    )


def head_of(config: Mapping[str, Any], task: Task) -> Head:
    """The labels and width a task needs, read from a transformers config (as a dict)."""
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label)))
    return Head(
        labels=labels,
        hidden_size=int(config.get("hidden_size") or config.get("dim") or config.get("d_model") or 0),
        multi_label=config.get("problem_type") == "multi_label_classification",
    )
