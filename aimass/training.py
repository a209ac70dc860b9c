"""What every framework trainer shares: the loss a label array implies, the progress bar, logits or not.

``update()`` and ``distill()`` hand a backend, inputs and targets to the trainer the framework's
folder declares (``trainers`` and ``distillers`` in its ``plugin.py``); the trainers use these helpers so that "loss",
"progress" and "are these probabilities?" mean the same for every framework.

Example:
    >>> import numpy as np
    >>> loss_kind(None, np.array([0, 1, 1]))
    'cross_entropy'
    >>> looks_like_probabilities(np.array([[0.2, 0.8], [0.5, 0.5]]))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["log_target", "loss_kind", "looks_like_probabilities", "progress_bar", "run_steps"]


def progress_bar(total: int, desc: str, progress: bool | None) -> Any:
    """A tqdm bar over ``total`` steps; ``progress=None`` shows it for more than one step, on a terminal only.

    A bar written to a log file or CI output is one line per update (a distillation wrote 320), so
    by default it follows tqdm's ``disable=None``: shown only when stderr is a terminal (and in notebooks).

    Example:
        >>> progress_bar(10, "update", progress=False).disable
        True
    """
    from tqdm.auto import tqdm

    disable = (None if total > 1 else True) if progress is None else not progress
    return tqdm(total=total, unit="batch", desc=desc, disable=disable)


def loss_kind(loss: str | None, y: np.ndarray) -> str:
    """``"cross_entropy"`` for integer labels, ``"mse"`` otherwise, unless ``loss`` says which."""
    if loss is None:
        return "cross_entropy" if y.dtype.kind in "biu" else "mse"
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")
    return loss


def looks_like_probabilities(out: np.ndarray) -> bool:
    """Whether the last axis of ``out`` holds probabilities: non-negative rows that sum to 1."""
    return bool(out.size) and bool(out.min() >= 0) and bool(np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def log_target(target: np.ndarray, kind: str) -> np.ndarray:
    """Probabilities as log-probabilities (what distillation's KL terms compare); other targets as they are."""
    return np.log(np.clip(target, 1e-8, None)) if kind == "probabilities" else target


def run_steps(
    n: int,
    hyper: dict[str, Any],
    seed: int,
    progress: bool | None,
    step: Callable[[np.ndarray], float],
    *,
    desc: str = "distill",
) -> None:
    """Call ``step(row_indices) -> loss`` on shuffled minibatches for ``hyper["epochs"]`` epochs, with a progress bar.

    The one minibatch loop of the framework trainers that write their own (torch's update and
    distill, Keras's distill). Example:
    ``run_steps(len(x), {"epochs": 3, "batch_size": 32}, 0, False, lambda idx: train_on(x[idx]))``
    """
    rng = np.random.default_rng(seed)
    batch_size = hyper["batch_size"]
    steps = hyper["epochs"] * -(-n // batch_size)
    with progress_bar(steps, desc, progress) as bar:
        for epoch in range(hyper["epochs"]):
            order = rng.permutation(n)
            for idx in (order[i : i + batch_size] for i in range(0, n, batch_size)):
                loss = step(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
