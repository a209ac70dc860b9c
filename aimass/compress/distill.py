"""Knowledge distillation: train a smaller student on a teacher's soft outputs.

The teacher is any Model (any backend, even remote): only its predictions are used. The student
is an untrained (or pre-trained) torch ``nn.Module`` or Keras model taking the teacher's inputs
and producing logits. Loss per batch, with ``T = temperature``::

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

from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.schema import DType, Schema, TensorSpec
from aimass.training import looks_like_probabilities

if TYPE_CHECKING:
    from collections.abc import Callable

    from aimass.model import Model

__all__ = ["distill"]


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
    lr: float = 1e-3,
    output: str | None = None,
    seed: int = 0,
    progress: bool = True,
    max_drop: float | None = None,
    repeats: int = 20,
) -> Model:
    """Train ``student`` to mimic ``teacher`` on ``data``; return it as a Model with ``.report``.

    ``output`` names the teacher output to distil (default: the first 2-D float output, else the
    first float one). The report compares teacher (before) and student (after) on ``data``.

    Example:
        >>> s = distill(t, student_net, x, labels=y, temperature=3.0, alpha=0.7, epochs=10)   # doctest: +SKIP
    """
    from aimass.compress import enforce_max_drop
    from aimass.compress.report import measure
    from aimass.model import Model

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
    hyper = {"temperature": temperature, "alpha": alpha, "epochs": epochs, "batch_size": batch_size, "lr": lr}
    if isinstance(student, Model):  # a wrapped student: train the framework object inside
        student_obj = getattr(student.backend, "module", None) or getattr(student.backend, "model", None)
    else:
        student_obj = student
    spec = teacher.schema.output(target_name)
    out_schema = Schema(
        inputs=teacher.schema.inputs, outputs=[TensorSpec(name=target_name, dtype=DType.FP32, shape=spec.shape)]
    )
    module = type(student_obj).__module__ or ""
    if module.startswith("torch") or _is_torch_module(student_obj):
        trained = _train_torch(student_obj, inputs, target, y, kind, hyper, seed, progress)
        result = Model.load(trained, schema=out_schema, name=f"{teacher.name or 'model'}-student")
    elif module.startswith(("keras", "tensorflow", "tf_keras")):
        trained = _train_keras(student_obj, inputs, target, y, kind, hyper, seed, progress)
        result = Model.load(trained, schema=out_schema, name=f"{teacher.name or 'model'}-student")
    else:
        raise UnsupportedOperation(
            f"distill trains torch nn.Module or Keras students, got {type(student_obj).__name__}"
        )
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


def _target_kind(target: np.ndarray) -> str:
    """``probabilities``, ``logits`` (class scores) or ``mse`` (anything else)."""
    if target.ndim != 2 or target.shape[1] < 2:
        return "mse"
    if looks_like_probabilities(target):
        return "probabilities"
    return "logits"


def _is_torch_module(obj: Any) -> bool:
    return any(k.__module__.startswith("torch.nn") for k in type(obj).__mro__)


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _log_target(target: np.ndarray, kind: str) -> np.ndarray:
    """Probabilities as log-probabilities (what both trainers' KL terms compare); other targets as they are."""
    return np.log(np.clip(target, 1e-8, None)) if kind == "probabilities" else target


def _run_steps(n: int, hyper: dict[str, Any], seed: int, progress: bool, step: Callable[[np.ndarray], float]) -> None:
    """Call ``step(row_indices) -> loss`` on shuffled minibatches for ``hyper["epochs"]`` epochs, with a progress bar.

    Example: ``_run_steps(len(x), {"epochs": 3, "batch_size": 32}, 0, False, lambda idx: train_on(x[idx]))``
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    steps = hyper["epochs"] * -(-n // hyper["batch_size"])
    with tqdm(total=steps, desc="distill", unit="step", disable=not progress) as bar:
        for epoch in range(hyper["epochs"]):
            for idx in _batches(n, hyper["batch_size"], rng):
                loss = step(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")


# -- torch -------------------------------------------------------------------------------------------


def _softmax_output(module: Any, args: Any, out: Any) -> Any:
    torch = require("torch", feature="the torch backend", extra="torch")
    return torch.softmax(out, dim=-1)


def _train_torch(
    student: Any,
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    hyper: dict[str, Any],
    seed: int,
    progress: bool,
) -> Any:
    import copy

    torch = require("torch", feature="the torch backend", extra="torch")
    fn = torch.nn.functional
    torch.manual_seed(seed)
    net = copy.deepcopy(student).train()
    opt = torch.optim.Adam(net.parameters(), lr=hyper["lr"])
    t, alpha = hyper["temperature"], hyper["alpha"]
    xs = [torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
    teacher = torch.from_numpy(_log_target(target, kind))
    ys = torch.from_numpy(labels.astype(np.int64)) if labels is not None and kind != "mse" else None

    def step(idx: np.ndarray) -> float:
        i = torch.from_numpy(idx)
        out = net(*(x[i] for x in xs))
        if kind == "mse":
            loss = fn.mse_loss(out.reshape(teacher[i].shape), teacher[i])
        else:
            soft = fn.kl_div(
                fn.log_softmax(out / t, dim=-1), fn.log_softmax(teacher[i] / t, dim=-1), log_target=True,
                reduction="batchmean",
            )  # fmt: skip
            loss = alpha * t * t * soft
            if ys is not None and alpha < 1.0:
                loss = loss + (1.0 - alpha) * fn.cross_entropy(out, ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    _run_steps(target.shape[0], hyper, seed, progress, step)
    net.eval()
    if kind == "probabilities":
        # A hook, not a wrapper: forward() keeps its signature (input names) and torch.export traces it.
        net.register_forward_hook(_softmax_output)
    return net


# -- keras -------------------------------------------------------------------------------------------


def _train_keras(
    student: Any,
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    hyper: dict[str, Any],
    seed: int,
    progress: bool,
) -> Any:
    tf = require("tensorflow", feature="the tensorflow backend", extra="tensorflow")
    keras = require("keras", feature="the tensorflow backend", extra="tensorflow")
    keras.utils.set_random_seed(seed)
    net = keras.models.clone_model(student)
    net.set_weights(student.get_weights())
    opt = keras.optimizers.Adam(learning_rate=hyper["lr"])
    t, alpha = hyper["temperature"], hyper["alpha"]
    teacher = _log_target(target, kind)
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

    _run_steps(target.shape[0], hyper, seed, progress, one_step)
    if kind == "probabilities":
        # Wrap with a softmax so that the student outputs what its teacher outputs.
        ins = net.inputs
        net = keras.Model(ins, keras.layers.Softmax()(net(ins[0] if len(ins) == 1 else ins)))
    return net
