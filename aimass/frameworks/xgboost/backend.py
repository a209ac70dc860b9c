"""XGBoost models: ``Booster``, ``XGBClassifier``, ``XGBRegressor`` and ``.json``/``.ubj`` files.

Never pickle: files are read with ``Booster.load_model``. The single input is ``input``
(``FP32 [-1, n_features]``). Classifiers (``binary:logistic``, ``multi:softprob``,
``multi:softmax``) output ``label`` (INT64 ``[-1]``) and ``probabilities`` (FP32
``[-1, n_classes]``); everything else outputs ``prediction`` (FP32 ``[-1]`` or
``[-1, n_targets]``). Prediction uses ``inplace_predict`` (no DMatrix per call).

Example:
    >>> import xgboost as xgb
    >>> from aimass import Model
    >>> m = Model.load(xgb.XGBClassifier(n_estimators=5).fit(X, y))  # doctest: +SKIP
    >>> m.predict(X[:3])["probabilities"].shape  # doctest: +SKIP
    (3, 2)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require_framework
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["XGBoostBackend"]

_CLASSIFIER_OBJECTIVES = ("binary:logistic", "multi:softprob", "multi:softmax")


def _xgb() -> Any:
    return require_framework("xgboost", backend="xgboost", extra="xgboost")


class XGBoostBackend(Backend):
    """An XGBoost ``Booster`` run with ``inplace_predict``."""

    name: ClassVar[str] = "xgboost"
    framework: ClassVar[str] = "xgboost"
    extra: ClassVar[str] = "xgboost"
    suffixes: ClassVar[tuple[str, ...]] = (".ubj", ".xgb", ".json")
    type_modules: ClassVar[tuple[str, ...]] = ("xgboost.",)

    def __init__(self, booster: Any, device: str, schema: Schema | None) -> None:
        self.booster = booster
        self.device = device
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective: str = learner["objective"]["name"]
        n_features = booster.num_features()
        self.n_classes = max(int(learner["learner_model_param"].get("num_class", "0")), 2)
        n_targets = int(learner["learner_model_param"].get("num_target", "1"))
        self.is_classifier = self.objective in _CLASSIFIER_OBJECTIVES
        if self.objective == "multi:softmax":
            # inplace_predict would return labels with no probabilities; softprob gives both.
            booster.set_param({"objective": "multi:softprob"})
            self.objective = "multi:softprob"
        if self.is_classifier:
            outputs = [
                TensorSpec(name="label", dtype=DType.INT64, shape=[-1]),
                TensorSpec(name="probabilities", dtype=DType.FP32, shape=[-1, self.n_classes]),
            ]
        else:
            shape = [-1] if n_targets == 1 else [-1, n_targets]
            outputs = [TensorSpec(name="prediction", dtype=DType.FP32, shape=shape)]
        inferred = Schema(inputs=[TensorSpec(name="input", dtype=DType.FP32, shape=[-1, n_features])], outputs=outputs)
        self.schema = schema or inferred
        self._in = self.schema.input_names[0]
        self._out = self.schema.output_names

    @classmethod
    def accepts(cls, source: Any) -> bool:
        if isinstance(source, (str, Path)) and str(source).lower().endswith(".json"):
            return _looks_like_xgboost_json(Path(source))
        return super().accepts(source)

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> XGBoostBackend:
        xgb = _xgb()
        if isinstance(source, (str, Path)):
            path = Path(source)
            booster = xgb.Booster()
            try:
                booster.load_model(str(path))
            except (xgb.core.XGBoostError, OSError) as e:
                raise ModelLoadError(f"xgboost could not load {path.name!r}: {str(e).splitlines()[0]}") from e
        elif isinstance(source, xgb.Booster):
            booster = source.copy()  # later training of the caller's object must not change this model
        elif hasattr(source, "get_booster"):
            try:
                booster = source.get_booster().copy()
            except Exception as e:  # sklearn's NotFittedError and xgboost's own
                raise ModelLoadError(f"xgboost model is not fitted: {e}") from e
        else:
            raise ModelLoadError(f"the xgboost backend cannot load a {type(source).__name__}")
        backend = cls(booster, "cpu", schema)
        return backend.to(device) if device != "cpu" else backend

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs[self._in]
        try:
            pred = self.booster.inplace_predict(x, validate_features=False)
        except Exception as e:  # XGBoostError and ValueError from bad shapes
            raise PredictionError(f"xgboost failed: {str(e).splitlines()[0]}") from e
        if not self.is_classifier:
            return {self._out[0]: np.asarray(pred, dtype=np.float32)}
        if pred.ndim == 1:
            pred = pred.astype(np.float32)
            proba = np.stack([1.0 - pred, pred], axis=1)
        else:
            proba = np.asarray(pred, dtype=np.float32)
        return {self._out[0]: proba.argmax(axis=1).astype(np.int64), self._out[1]: proba}

    def to(self, device: str) -> XGBoostBackend:
        kind, index = split_device(device)
        if device == self.device:
            return self
        if kind == "cuda":
            xgb = _xgb()
            if not xgb.build_info().get("USE_CUDA"):
                raise DeviceError(f"device {device!r}: this xgboost build has no CUDA support")
        booster = self.booster.copy()
        booster.set_param({"device": "cpu" if kind == "cpu" else f"cuda:{index}"})
        return XGBoostBackend(booster, device, self.schema)

    def save(self, directory: Path) -> list[str]:
        self.booster.save_model(str(directory / "model.ubj"))
        return ["model.ubj"]


def _looks_like_xgboost_json(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b'{"learner"')
