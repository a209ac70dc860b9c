"""Keras training for ``update()``: ``fit`` on a clone of the model, with a progress bar."""

from __future__ import annotations

from typing import Any

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require
from aimass.frameworks.keras.backend import KerasBackend
from aimass.training import looks_like_probabilities, loss_kind, progress_bar

__all__ = ["train"]


def train(
    backend: Backend,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float | None,
    batch_size: int,
    loss: str | None,
    progress: bool | None,
    desc: str = "update",
    **_: Any,
) -> KerasBackend:
    """``epochs`` of ``fit`` on a clone of the Keras model (weights copied), with a progress bar."""
    keras = require("keras", feature="keras training", extra="tensorflow")
    original = KerasBackend.of(backend).model
    clone = keras.models.clone_model(original)
    clone.set_weights(original.get_weights())
    kind = loss_kind(loss, y)
    loss_fn = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=_logits(backend, inputs))
        if kind == "cross_entropy"
        else keras.losses.MeanSquaredError()
    )
    clone.compile(optimizer=keras.optimizers.Adam(learning_rate or 1e-3), loss=loss_fn)
    names = backend.schema.input_names
    x = inputs[names[0]] if len(names) == 1 else {n: inputs[n] for n in names}
    rows = y.shape[0]
    steps = -(-rows // batch_size)
    with progress_bar(epochs * steps, desc, progress) as bar:

        class _Bar(keras.callbacks.Callback):  # type: ignore[name-defined]
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                bar.update(1)

        clone.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[_Bar()])
    return KerasBackend.load(clone, device=backend.device, schema=backend.schema)


def _logits(backend: Backend, inputs: dict[str, np.ndarray]) -> bool:
    sample = {key: v[:8] for key, v in inputs.items()}
    return not looks_like_probabilities(next(iter(backend.run(sample).values())))
