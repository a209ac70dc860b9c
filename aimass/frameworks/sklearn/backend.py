"""scikit-learn estimators and ``Pipeline``s, and ``.skops`` files (skops' secure format, never pickle).

The single input is ``input`` (``FP32 [-1, n_features]``, from ``n_features_in_``).

* **Classifiers** (``is_classifier``; a ``Pipeline`` is judged by its final step) output ``label``
  (INT64 ``[-1]``, what ``predict`` returns) and, when the estimator has ``predict_proba``,
  ``probabilities`` (FP32 ``[-1, n_classes]``, columns in ``classes_`` order). Classifiers
  without ``predict_proba`` (``LinearSVC``, ``SVC(probability=False)``, ...) output ``label`` only.
  ``label`` is the class value itself when the classes are integers (or bools, or integral
  floats); otherwise (strings, fractional floats) it is the *index* of the predicted class in
  ``classes_``, which :attr:`SklearnBackend.classes` holds: ``backend.classes[label]`` gives the
  class values back.
* **Regressors** output ``prediction`` (FP32 ``[-1]``, or ``[-1, n_targets]``); other estimators
  with ``predict`` (clusterers, outlier detectors) ``prediction`` too, INT64 when ``predict``
  returns integers. Estimators without ``predict`` (bare transformers) are refused.
* **Feature names.** An estimator fitted on a pandas DataFrame (``feature_names_in_``) takes a
  DataFrame whose columns are matched *by name*, in any order (missing or unknown columns are
  refused with :class:`~aimass.errors.SchemaError`); arrays are taken in ``feature_names_in_``
  order. The estimator itself is called with a DataFrame of those columns (so name-based
  ``ColumnTransformer`` steps work); pandas must be installed. Only numeric columns fit the
  FP32 input. Models fitted on arrays take a DataFrame whole, in its column order.
* **Files.** :meth:`~SklearnBackend.save` writes ``model.skops`` with ``skops.io.dump``.
  Loading lists the file's types with ``skops.io.get_untrusted_types`` and refuses the file
  (:class:`~aimass.errors.ModelLoadError` naming them) when any type is neither trusted by skops,
  nor one of scikit-learn's own data structures in :data:`TRUSTED_BY_DEFAULT` (tree arrays,
  KD/ball trees, distance metrics, MLP optimisers, ``numpy.dtype``), nor listed by the caller:
  ``options={"trusted": ["mymodule.MyEstimator"]}``. Nothing is unpickled.
* Objects are deep-copied on load: training the caller's estimator later does not change the Model.
  ``predict``/``predict_proba`` of scikit-learn estimators are safe to call from many threads.

Example:
    >>> from sklearn.linear_model import LogisticRegression
    >>> from aimass import Model
    >>> m = Model.load(LogisticRegression().fit(X, y))                # doctest: +SKIP
    >>> m.predict(X[:3])["probabilities"].shape                        # doctest: +SKIP
    (3, 3)
    >>> m.save("pkg"); Model.load("pkg")                               # doctest: +SKIP
    >>> Model.load("custom.skops", options={"trusted": ["mymod.MyEstimator"]})  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import PrivateAttr

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.errors import ModelLoadError, PredictionError, SchemaError
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["TRUSTED_BY_DEFAULT", "SklearnBackend"]

# scikit-learn's own data structures that skops does not trust by default: plain arrays and
# parameters behind Cython/Python classes, with no callables. Anything else needs options["trusted"].
TRUSTED_BY_DEFAULT: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)
_DISTANCE_MODULE = "sklearn.metrics._dist_metrics."


def _trusted_by_default(name: str) -> bool:
    if name in TRUSTED_BY_DEFAULT:
        return True
    # DistanceMetric subclasses (EuclideanDistance64, ManhattanDistance32, ...), stored by KD/ball trees.
    rest = name.removeprefix(_DISTANCE_MODULE)
    return rest != name and "." not in rest and rest.endswith(("Distance64", "Distance32"))


def _sklearn() -> Any:
    return require_framework("sklearn", backend="sklearn", extra="sklearn", package="scikit-learn")


def _skops_io() -> Any:
    return require_framework("skops.io", backend="sklearn", extra="sklearn", package="skops")


class _FrameSchema(Schema):
    """A Schema whose single 2-D input also takes a DataFrame by column names (``feature_names_in_``)."""

    _columns: list[str] | None = PrivateAttr(default=None)

    def named(self, data: Any) -> Mapping[str, Any]:
        columns = self._columns
        if columns is None or type(data).__name__ != "DataFrame" or not hasattr(data, "columns"):
            return super().named(data)
        got = [str(c) for c in data.columns]
        if got != columns:
            missing = [c for c in columns if c not in got]
            unknown = [c for c in got if c not in columns]
            name = self.inputs[0].name
            if missing:
                raise SchemaError(
                    f"input {name!r}: DataFrame lacks columns {missing}; the model's are {columns}", tensor=name
                )
            if unknown or len(set(got)) != len(got):
                raise SchemaError(
                    f"input {name!r}: unexpected or repeated DataFrame columns {unknown or got}; "
                    f"the model's are {columns}",
                    tensor=name,
                )
            data = data.iloc[:, [got.index(c) for c in columns]]
        return {self.inputs[0].name: data.to_numpy()}


def _with_columns(schema: Schema, columns: list[str] | None) -> Schema:
    ins = schema.inputs
    if columns is None or len(ins) != 1 or len(ins[0].shape) != 2 or ins[0].shape[1] not in (-1, len(columns)):
        return schema
    framed = _FrameSchema(inputs=schema.inputs, outputs=schema.outputs)
    framed._columns = columns
    return framed


def _integral_classes(classes: np.ndarray) -> bool:
    if classes.dtype.kind in "biu":
        return True
    if classes.dtype.kind == "f":
        return bool(np.all(np.isfinite(classes)) and np.all(classes == np.round(classes)))
    return False


def _describe(estimator: Any) -> str:
    if hasattr(estimator, "steps"):
        return f"Pipeline (final step {type(estimator.steps[-1][1]).__name__})"
    return type(estimator).__name__


class SklearnBackend(Backend):
    """A fitted scikit-learn estimator or ``Pipeline``, run with ``predict`` / ``predict_proba``."""

    name: ClassVar[str] = "sklearn"
    framework: ClassVar[str] = "scikit-learn"
    extra: ClassVar[str] = "sklearn"
    suffixes: ClassVar[tuple[str, ...]] = (".skops",)
    type_modules: ClassVar[tuple[str, ...]] = ("sklearn.",)

    #: ``classes_`` of a classifier (``None`` otherwise); ``label`` indexes it when ``label_is_index``.
    classes: np.ndarray | None = None
    label_is_index: bool = False

    def __init__(self, estimator: Any, schema: Schema | None = None, n_features: int | None = None) -> None:
        sk = _sklearn()
        if not hasattr(estimator, "predict"):
            raise ModelLoadError(f"the sklearn backend runs estimators with predict; {_describe(estimator)} has none")
        self.estimator = estimator
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names: list[str] | None = None if names is None else [str(n) for n in names]
        n = getattr(estimator, "n_features_in_", None)
        if n is None:
            n = n_features if n_features is not None else (len(self.feature_names) if self.feature_names else None)
        if n is None and schema is not None and len(schema.inputs[0].shape) == 2:
            n = schema.inputs[0].shape[1]
        if n is None or n < 0:
            raise ModelLoadError(f"{_describe(estimator)} has no n_features_in_: pass schema= or example_input=")
        self.n_features = int(n)
        self.is_classifier = bool(sk.base.is_classifier(estimator))
        self.has_proba = self.is_classifier and hasattr(estimator, "predict_proba")
        self._pandas: Any = None
        outputs: list[TensorSpec]
        if self.is_classifier:
            classes = getattr(estimator, "classes_", None)
            if classes is None or isinstance(classes, list) or np.ndim(classes) != 1:
                raise ModelLoadError(f"{_describe(estimator)}: multi-output classifiers are not supported")
            self.classes = np.asarray(classes)
            self.label_is_index = not _integral_classes(self.classes)
            outputs = [TensorSpec(name="label", dtype=DType.INT64, shape=[-1])]
            if self.has_proba:
                outputs.append(TensorSpec(name="probabilities", dtype=DType.FP32, shape=[-1, len(self.classes)]))
        else:
            outputs = [self._probe_prediction(bool(sk.base.is_regressor(estimator)))]
        inferred = Schema(
            inputs=[TensorSpec(name="input", dtype=DType.FP32, shape=[-1, self.n_features])], outputs=outputs
        )
        self.schema = _with_columns(schema or inferred, self.feature_names)
        self._in = self.schema.input_names[0]
        self._out = self.schema.output_names

    def _probe_prediction(self, regressor: bool) -> TensorSpec:
        """``prediction``'s dtype and shape, from one all-zero row (FP32 ``[-1]`` when that fails)."""
        try:
            sample = np.asarray(self.estimator.predict(self.frame(np.zeros((1, self.n_features), np.float32))))
        except Exception:
            return TensorSpec(name="prediction", dtype=DType.FP32, shape=[-1])
        dtype = DType.INT64 if sample.dtype.kind in "biu" and not regressor else DType.FP32
        shape = [-1] if sample.ndim <= 1 else [-1, *sample.shape[1:]]
        return TensorSpec(name="prediction", dtype=dtype, shape=shape)

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> SklearnBackend:
        sk = _sklearn()
        if isinstance(source, (str, Path)):
            estimator = _load_skops(Path(source), (options or {}).get("trusted") or ())
        else:
            try:
                sk.utils.validation.check_is_fitted(source)
            except sk.exceptions.NotFittedError as e:
                raise ModelLoadError(f"the {_describe(source)} is not fitted: {e}") from e
            except TypeError as e:  # not an estimator at all
                raise ModelLoadError(f"the sklearn backend cannot load a {type(source).__name__}: {e}") from e
            estimator = copy.deepcopy(source)  # later training of the caller's object must not change this model
        n_features = None
        if example_input is not None:
            shape = np.shape(
                next(iter(example_input.values())) if isinstance(example_input, Mapping) else example_input
            )
            n_features = int(shape[-1]) if shape else None
        backend = cls(estimator, schema, n_features)
        if device != "cpu":
            backend.to(device)  # scikit-learn runs on the CPU only: DeviceError names the device
        return backend

    def frame(self, x: np.ndarray) -> Any:
        """``x`` as the estimator expects it: a DataFrame with ``feature_names_in_`` columns when fitted on one."""
        if self.feature_names is None:
            return x
        pd = self._pandas
        if pd is None:
            pd = self._pandas = require_framework("pandas", backend="sklearn", extra="pandas")
        return pd.DataFrame(x, columns=self.feature_names, copy=False)

    def labels(self, predicted: Any) -> np.ndarray:
        """``predict``'s output as the INT64 ``label``: the class value, or its index in ``classes``."""
        pred = np.asarray(predicted)
        if not self.label_is_index:
            return pred.astype(np.int64, copy=False)
        assert self.classes is not None
        order = np.argsort(self.classes, kind="stable")
        index = np.searchsorted(self.classes, pred, sorter=order)
        return order[np.minimum(index, len(order) - 1)].astype(np.int64, copy=False)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self.frame(inputs[self._in])
        est = self.estimator
        try:
            pred = est.predict(x)
            proba = est.predict_proba(x) if self.has_proba else None
        except Exception as e:  # ValueError from bad data, anything from custom steps
            raise PredictionError(
                f"scikit-learn failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        if not self.is_classifier:
            spec = self.schema.outputs[0]
            return {self._out[0]: np.asarray(pred).astype(spec.dtype.numpy, copy=False)}
        out = {self._out[0]: self.labels(pred)}
        if proba is not None:
            out[self._out[1]] = np.asarray(proba, dtype=np.float32)
        return out

    def save(self, directory: Path) -> list[str]:
        _skops_io().dump(self.estimator, directory / "model.skops")
        return ["model.skops"]


def _load_skops(path: Path, trusted: Any) -> Any:
    sio = _skops_io()
    if isinstance(trusted, str) or not all(isinstance(t, str) for t in trusted):
        raise ModelLoadError('options["trusted"] must be a list of type names such as "mymodule.MyEstimator"')
    try:
        found = list(sio.get_untrusted_types(file=path))
    except Exception as e:  # BadZipFile, KeyError for a missing schema, JSON errors
        raise ModelLoadError(f"skops could not read {path.name!r}: {type(e).__name__}: {e}") from e
    refused = sorted(t for t in found if not _trusted_by_default(t) and t not in set(trusted))
    if refused:
        raise ModelLoadError(
            f"{path.name!r} holds types that are not trusted: {refused}; load it only if you trust its "
            f"source, with options={{'trusted': {refused!r}}}"
        )
    try:
        estimator = sio.load(path, trusted=found)
    except Exception as e:
        raise ModelLoadError(f"skops could not load {path.name!r}: {type(e).__name__}: {e}") from e
    if not hasattr(estimator, "predict"):
        raise ModelLoadError(f"{path.name!r} holds a {type(estimator).__name__}, not an estimator with predict")
    return estimator
