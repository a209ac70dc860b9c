"""Incremental training: continue from a Model's current weights on new data; returns a new Model.

* XGBoost: continued boosting (``xgb.train(..., xgb_model=booster)``) adds ``rounds`` trees with the
  model's own objective and tree parameters;
* PyTorch: ``epochs`` of fine-tuning with Adam on a copy of the module (cross-entropy for integer
  labels with a 2-D output, mean squared error otherwise), with a tqdm progress bar;
* Keras: ``epochs`` of ``fit`` on a clone of the model, with the same progress bar.

The original Model is never changed (scikit-learn's rule: verbs return new objects). Pair it with
drift monitoring (:mod:`aimass.monitor`) to decide when to update, then evaluate and publish.

Example:
    >>> m2 = m.update(new_rows, new_labels, rounds=20)        # doctest: +SKIP
    >>> store.publish(m2, "fraud", metrics=evaluate(m2, x, y)) # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aimass import plugins
from aimass.errors import SchemaError, UnsupportedOperation

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["update"]


def update(
    model: Model,
    data: Any,
    labels: Any,
    *,
    epochs: int = 3,
    rounds: int = 10,
    learning_rate: float | None = None,
    batch_size: int = 32,
    loss: str | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> Model:
    """Train ``model`` further on ``data``/``labels`` and return the result as a new Model.

    ``rounds`` applies to XGBoost (trees added), ``epochs``/``learning_rate``/``batch_size`` to
    torch and Keras (``learning_rate`` defaults to 1e-3). ``loss`` is ``"cross_entropy"`` or
    ``"mse"`` (default: from the labels' dtype). ``progress=None`` shows a bar when more than one
    batch is run.

    Example:
        >>> m2 = update(m, x_new, y_new, epochs=2)   # doctest: +SKIP
    """
    from aimass.model import Model

    inputs = model.schema.coerce(data)
    y = np.asarray(labels)
    rows = next(iter(inputs.values())).shape[0]
    if y.shape[0] != rows:
        raise SchemaError(f"update got {rows} input rows but {y.shape[0]} labels")
    name = model.backend_name
    trainers = plugins.keys(plugins.TRAINER)
    if name not in trainers:
        raise UnsupportedOperation(
            f"update is implemented for {', '.join(trainers)} models; this one runs on the {name!r} backend"
        )
    backend = plugins.lookup(plugins.TRAINER, name)(
        model.backend,
        inputs,
        y,
        epochs=epochs,
        rounds=rounds,
        learning_rate=learning_rate,
        batch_size=batch_size,
        loss=loss,
        progress=progress,
        seed=seed,
        desc=f"update {model.name or ''}".strip(),
    )
    metadata = {k: v for k, v in model.metadata.items() if k != "store"}
    history = list(metadata.get("updates", []))
    history.append({"rows": int(rows), "backend": name})
    metadata["updates"] = history
    if "store" in model.metadata:
        origin = model.metadata["store"]
        metadata["updated_from"] = {"name": origin.get("name"), "version": origin.get("version")}
    return Model(backend, name=model.name, metadata=metadata)
