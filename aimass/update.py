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

import contextlib
import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import SchemaError, UnsupportedOperation
from aimass.frameworks.sklearn.train import update as _update_sklearn  # imports no sklearn

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = ["update"]

# Tree parameters carried over from the booster's saved config into continued boosting.
_XGB_TREE_PARAMS = ("eta", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "lambda", "alpha", "gamma")


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
    updaters: dict[str, Callable[..., Any]] = {"xgboost": _update_xgboost, "torch": _update_torch}
    updaters["sklearn"] = _update_sklearn  # partial_fit, in aimass/frameworks/sklearn/train.py
    name = model.backend_name
    if name == "keras" and hasattr(model.backend, "model"):
        fn: Callable[..., Any] = _update_keras
    elif name in updaters:
        fn = updaters[name]
    else:
        raise UnsupportedOperation(
            f"update is implemented for xgboost, torch, keras and sklearn models; this one runs on the {name!r} backend"
        )
    backend = fn(
        model,
        inputs,
        y,
        epochs=epochs,
        rounds=rounds,
        learning_rate=learning_rate,
        batch_size=batch_size,
        loss=loss,
        progress=progress,
        seed=seed,
    )
    metadata = {k: v for k, v in model.metadata.items() if k != "store"}
    history = list(metadata.get("updates", []))
    history.append({"rows": int(rows), "backend": name})
    metadata["updates"] = history
    if "store" in model.metadata:
        origin = model.metadata["store"]
        metadata["updated_from"] = {"name": origin.get("name"), "version": origin.get("version")}
    return Model(backend, name=model.name, metadata=metadata)


def _update_xgboost(model: Model, inputs: dict[str, np.ndarray], y: np.ndarray, *, rounds: int, **_: Any) -> Any:
    from aimass.frameworks.xgboost.backend import XGBoostBackend

    xgb = require("xgboost", feature="the xgboost backend", extra="xgboost")
    backend = model.backend
    booster = backend.booster  # type: ignore[attr-defined]
    config = json.loads(booster.save_config())
    learner = config["learner"]
    params: dict[str, Any] = {"objective": learner["objective"]["name"]}
    num_class = int(learner["learner_model_param"].get("num_class", "0"))
    if num_class > 1:
        params["num_class"] = num_class
    tree = config["learner"]["gradient_booster"].get("tree_train_param") or {}
    params.update({k: float(tree[k]) for k in _XGB_TREE_PARAMS if k in tree})
    if "max_depth" in params:
        params["max_depth"] = int(params["max_depth"])
    updater = config["learner"]["gradient_booster"].get("gbtree_train_param", {}).get("tree_method")
    if updater:
        params["tree_method"] = updater
    x = inputs[model.schema.input_names[0]]
    dtrain = xgb.DMatrix(x, label=y)
    new = xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=booster.copy(), verbose_eval=False)
    return XGBoostBackend(new, backend.device, model.schema)


def _progress(total: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", desc=desc, disable=not (total > 1 if progress is None else progress))


def _loss_kind(loss: str | None, y: np.ndarray) -> str:
    if loss is None:
        return "cross_entropy" if y.dtype.kind in "biu" else "mse"
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")
    return loss


def _update_torch(
    model: Model,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float | None,
    batch_size: int,
    loss: str | None,
    progress: bool | None,
    seed: int,
    **_: Any,
) -> Any:
    from aimass.frameworks.torch.backend import TorchBackend

    torch = require("torch", feature="the torch backend", extra="torch")
    backend = model.backend
    try:
        module = copy.deepcopy(backend.module)  # type: ignore[attr-defined]
    except Exception as e:  # some compiled modules cannot be copied
        raise UnsupportedOperation(f"this torch module cannot be copied for fine-tuning: {e}") from e
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params:
        raise UnsupportedOperation("this torch module has no trainable parameters")
    for p in params:
        p.requires_grad_(True)
    kind = _loss_kind(loss, y)
    names = model.schema.input_names
    device = torch.device(backend.device)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(params, lr=learning_rate or 1e-3)
    target = torch.from_numpy(y.astype(np.int64) if kind == "cross_entropy" else y.astype(np.float32)).to(device)
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in names]
    rows = target.shape[0]
    steps = -(-rows // batch_size)
    if hasattr(module, "train"):
        with contextlib.suppress(NotImplementedError):  # exported-program modules refuse train()/eval()
            module.train()
    with _progress(epochs * steps, f"update {model.name or ''}".strip(), progress) as bar:
        for epoch in range(epochs):
            order = torch.randperm(rows, generator=generator).to(device)
            total = 0.0
            for start in range(0, rows, batch_size):
                idx = order[start : start + batch_size]
                out = module(*(t[idx] for t in tensors))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = next(iter(out.values()))
                batch_target = target[idx]
                if kind == "cross_entropy":
                    value = torch.nn.functional.cross_entropy(out, batch_target)
                else:
                    value = torch.nn.functional.mse_loss(out.reshape(batch_target.shape), batch_target)
                optimiser.zero_grad()
                value.backward()
                optimiser.step()
                total += float(value.detach()) * idx.shape[0]
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / rows:.4f}")
    if hasattr(module, "eval"):
        with contextlib.suppress(NotImplementedError):
            module.eval()
    for p in params:
        p.requires_grad_(False)
    return TorchBackend(module, model.schema, backend.device, getattr(backend, "_example", None))


def _update_keras(
    model: Model,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float | None,
    batch_size: int,
    loss: str | None,
    progress: bool | None,
    **_: Any,
) -> Any:
    keras = require("keras", feature="the keras backend", extra="tensorflow")
    backend = model.backend
    original = backend.model  # type: ignore[attr-defined]
    clone = keras.models.clone_model(original)
    clone.set_weights(original.get_weights())
    kind = _loss_kind(loss, y)
    loss_fn = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=_looks_like_logits(model, inputs))
        if kind == "cross_entropy"
        else keras.losses.MeanSquaredError()
    )
    clone.compile(optimizer=keras.optimizers.Adam(learning_rate or 1e-3), loss=loss_fn)
    names = model.schema.input_names
    x = inputs[names[0]] if len(names) == 1 else {n: inputs[n] for n in names}
    rows = y.shape[0]
    steps = -(-rows // batch_size)
    with _progress(epochs * steps, f"update {model.name or ''}".strip(), progress) as bar:

        class _Bar(keras.callbacks.Callback):  # type: ignore[name-defined]
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                bar.update(1)

        clone.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[_Bar()])
    klass = type(backend)
    return klass.load(clone, device=backend.device, schema=model.schema)


def _looks_like_logits(model: Model, inputs: dict[str, np.ndarray]) -> bool:
    sample = {k: v[:8] for k, v in inputs.items()}
    out = next(iter(model.backend.run(sample).values()))
    return not (out.min() >= 0 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
