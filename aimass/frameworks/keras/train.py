"""Keras training: ``update()`` fits a clone of the model; ``distill()`` trains a student on a teacher."""

from __future__ import annotations

from typing import Any

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require
from aimass.frameworks.keras.backend import KerasBackend
from aimass.training import log_target, looks_like_probabilities, loss_kind, progress_bar, run_steps

__all__ = ["distill", "train"]


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


def distill(
    student: Any,
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    hyper: dict[str, Any],
    seed: int,
    progress: bool | None,
) -> Any:
    """Train a clone of ``student`` (Keras model or backend) on a teacher's ``target`` (see compress.distill)."""
    tf = require("tensorflow", feature="keras distillation", extra="tensorflow")
    keras = require("keras", feature="keras distillation", extra="tensorflow")
    if isinstance(student, Backend):
        student = KerasBackend.of(student).model
    keras.utils.set_random_seed(seed)
    net = keras.models.clone_model(student)
    net.set_weights(student.get_weights())
    opt = keras.optimizers.Adam(learning_rate=hyper["learning_rate"])
    t, alpha = hyper["temperature"], hyper["alpha"]
    teacher = log_target(target, kind)
    names = list(inputs)

    @tf.function
    def step(xs: list[Any], teach: Any, ys: Any) -> Any:
        with tf.GradientTape() as tape:
            out = net(xs[0] if len(xs) == 1 else xs, training=True)
            if kind == "mse":
                loss = tf.reduce_mean(tf.square(tf.reshape(out, tf.shape(teach)) - teach))
            else:
                p_t = tf.nn.softmax(teach / t)
                soft = tf.reduce_mean(
                    tf.reduce_sum(p_t * (tf.nn.log_softmax(teach / t) - tf.nn.log_softmax(out / t)), axis=-1)
                )
                loss = alpha * t * t * soft
                if ys is not None and alpha < 1.0:
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ys, logits=out)
                    loss = loss + (1.0 - alpha) * tf.reduce_mean(ce)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    use_labels = labels is not None and kind != "mse"

    def one_step(idx: np.ndarray) -> float:
        ys = tf.constant(labels[idx].astype(np.int64)) if use_labels and labels is not None else None
        return float(step([tf.constant(inputs[k][idx]) for k in names], tf.constant(teacher[idx]), ys))

    run_steps(target.shape[0], hyper, seed, progress, one_step)
    if kind == "probabilities":
        # Wrap with a softmax so that the student outputs what its teacher outputs.
        ins = net.inputs
        net = keras.Model(ins, keras.layers.Softmax()(net(ins[0] if len(ins) == 1 else ins)))
    return net
