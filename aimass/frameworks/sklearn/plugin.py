"""What aimass offers for scikit-learn: the backend, the ONNX exporter (skl2onnx), ``partial_fit`` updates."""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="sklearn",
    backends={"sklearn": "aimass.frameworks.sklearn.backend:SklearnBackend"},
    detection_rank={"sklearn": 100},  # after xgboost: XGBClassifier has sklearn mixins
    exporters={("sklearn", "onnx"): "aimass.frameworks.sklearn.export:to_onnx"},
    trainers={"sklearn": "aimass.frameworks.sklearn.train:train"},
)
