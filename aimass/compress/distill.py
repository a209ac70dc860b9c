"""Knowledge distillation: train a smaller student on a teacher's soft outputs.

The teacher is any Model (any backend, even remote): only its predictions are used. The student
is an untrained (or pre-trained) torch ``nn.Module`` or Keras model taking the teacher's inputs
and producing logits; its framework's distiller (declared in ``aimass/frameworks/<name>/plugin.py``)
does the training. Loss per batch, with ``T = temperature``::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

(``alpha`` is 1 without labels). A teacher that outputs probabilities is read as
``log(probabilities)`` logits, and the student is wrapped with a softmax so that it outputs
probabilities too: the student is a drop-in replacement with the teacher's output name. A teacher
whose output is not a class score (one column, or 1-D) is distilled with mean squared error.

Example:
    >>> from aimass.compress import distill
    >>> small = distill(teacher_model, torch.nn.Sequential(...), x_train, labels=y_train, epochs=20)  # doctest: +SKIP
    >>> print(small.report)                                                                          # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass import plugins
from aimass.backends import detect
from aimass.errors import BackendNotFound, UnsupportedOperation
from aimass.schema import DType, Schema, TensorSpec
from aimass.training import looks_like_probabilities

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["distill", "distill_layers"]


def distill(
    teacher: Any,
    student: Any,
    data: Any,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 5,
    labels: Any = None,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    lr: float | None = None,
    output: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    max_drop: float | None = None,
    repeats: int = 20,
) -> Model:
    """Train ``student`` to mimic ``teacher`` on ``data``; return it as a Model with ``.report``.

    ``output`` names the teacher output to distil (default: the first 2-D float output, else the
    first float one). The report compares teacher (before) and student (after) on ``data``.
    ``learning_rate`` is the optimiser's (``lr``, its former name, still works with a DeprecationWarning).
    ``progress=None`` shows a training bar on a terminal only (a log would get a line per update).

    Example:
        >>> s = distill(t, student_net, x, labels=y, temperature=3.0, alpha=0.7, epochs=10)   # doctest: +SKIP
    """
    from aimass.compress.report import enforce_max_drop, measure
    from aimass.model import Model

    if lr is not None:
        learning_rate = _former_lr(lr)

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    teacher = teacher if isinstance(teacher, Model) else Model.load(teacher)
    inputs = teacher.schema.coerce(data)
    target_name = output or _target_output(teacher.schema)
    raw = teacher.predict_batch(inputs, batch_size=max(batch_size, 256), progress=False)[target_name]
    target = raw.astype(np.float32)
    kind = _target_kind(target)
    y = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != target.shape[0]:
            raise ValueError(f"labels has {y.shape[0]} rows, data has {target.shape[0]}")
    notes = []
    if kind != "mse" and y is None and alpha != 1.0:
        notes.append(f"no labels: alpha {alpha} -> 1.0 (soft targets only)")
        alpha = 1.0
    hyper = {"temperature": temperature, "alpha": alpha, "epochs": epochs, "batch_size": batch_size}
    hyper["learning_rate"] = learning_rate
    spec = teacher.schema.output(target_name)
    out_schema = Schema(
        inputs=teacher.schema.inputs, outputs=[TensorSpec(name=target_name, dtype=DType.FP32, shape=spec.shape)]
    )
    train = _distiller(student)
    native = student.backend if isinstance(student, Model) else student
    trained = train(native, inputs, target, y, kind, hyper, seed, progress)
    result = Model.load(trained, schema=out_schema, name=f"{teacher.name or 'model'}-student")
    report = measure(
        teacher,
        result,
        operation="distill",
        method=f"distill ({kind})",
        data=inputs,
        labels=labels,
        repeats=repeats,
        settings=hyper,
        notes=notes,
    )
    if max_drop is not None:
        enforce_max_drop(report, max_drop)
    return Model(result.backend, name=result.name, report=report)


def _target_output(schema: Schema) -> str:
    floats = [t for t in schema.outputs if t.dtype in (DType.FP16, DType.FP32, DType.FP64)]
    if not floats:
        raise UnsupportedOperation(f"the teacher has no float output to distil; outputs: {schema.output_names}")
    two_d = [t for t in floats if len(t.shape) == 2]
    return (two_d or floats)[0].name


def _former_lr(lr: float) -> float:
    """``lr=``, the former name of ``learning_rate=`` (``Model.update``'s name too): still read, with a warning."""
    warnings.warn("distill(lr=...) is now distill(learning_rate=...)", DeprecationWarning, stacklevel=3)
    return lr


def _target_kind(target: np.ndarray) -> str:
    """``probabilities``, ``logits`` (class scores) or ``mse`` (anything else)."""
    if target.ndim != 2 or target.shape[1] < 2:
        return "mse"
    if looks_like_probabilities(target):
        return "probabilities"
    return "logits"


def _distiller(student: Any) -> plugins.Distiller:
    """The trainer for ``student``'s framework, found by the backend registry's detection (imports nothing)."""
    from aimass.model import Model

    try:
        name = student.backend_name if isinstance(student, Model) else detect(student).name
    except BackendNotFound:
        name = ""
    distillers = plugins.keys(plugins.DISTILLER)
    if name not in distillers:
        raise UnsupportedOperation(
            f"distill trains torch nn.Module or Keras students ({', '.join(distillers)}), got {type(student).__name__}"
        )
    return plugins.lookup(plugins.DISTILLER, name)


def distill_layers(
    teacher: Model,
    *,
    layers: int,
    data: Any,
    output: str | None = None,
    labels: Any = None,
    metric: str | None = None,
    max_drop: float | None = None,
    repeats: int = 20,
    **options: Any,
) -> Model:
    """A student with ``layers`` of the teacher's transformer blocks, trained on ``data`` to match its output.

    What ``compress(m, "distill", layers=3, data=tokens)`` does. ``data`` are unlabelled inputs
    (token batches, as for ``predict``); the student starts from every other teacher layer. Options
    (``epochs``, ``batch_size``, ``learning_rate``, ``seed``, ``progress``) go to the framework's shrinker.
    The report compares teacher (before) and student (after) on ``data``.

    Example:
        >>> small = distill_layers(m, layers=3, data=tokens, epochs=3)   # doctest: +SKIP
    """
    from aimass.compress.report import enforce_max_drop, measure
    from aimass.model import Model

    if data is None:
        raise ValueError("distill needs data=: unlabelled inputs (token batches) to train the student on")
    if "lr" in options:
        options["learning_rate"] = _former_lr(options.pop("lr"))
    shrinkers = plugins.keys(plugins.SHRINKER)
    if teacher.backend_name not in shrinkers:
        raise UnsupportedOperation(
            f"distill with layers= builds students for {', '.join(shrinkers)} models, not {teacher.backend_name}"
        )
    inputs = teacher.schema.coerce(data)
    name = output or _target_output(teacher.schema)
    target = teacher.predict_batch(inputs, batch_size=64, progress=False)[name]
    shrink = plugins.lookup(plugins.SHRINKER, teacher.backend_name)
    result = shrink(teacher.backend, layers=layers, inputs=inputs, target=target, output=name, **options)
    student = Model(result.backend, name=f"{teacher.name or 'model'}-student", example=teacher.example)
    report = measure(
        teacher,
        student,
        operation="distill",
        method=f"distill ({result.settings.get('layers', layers)} layers)",
        data=inputs,
        labels=labels,
        metric=metric,
        repeats=repeats,
        settings=result.settings,
        notes=result.notes,
    )
    if max_drop is not None:
        enforce_max_drop(report, max_drop)
    return Model(student.backend, name=student.name, report=report, example=teacher.example)
