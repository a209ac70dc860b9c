"""What aimass offers for XGBoost: the backend, the ONNX exporter, continued boosting."""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="xgboost",
    backends={"xgboost": "aimass.frameworks.xgboost.backend:XGBoostBackend"},
    detection_rank={"xgboost": 40},  # before sklearn: XGBClassifier has sklearn mixins
    exporters={("xgboost", "onnx"): "aimass.frameworks.xgboost.export_onnx:xgboost_to_onnx"},
    trainers={"xgboost": "aimass.frameworks.xgboost.train:train"},
    compress_hints={
        "xgboost": "xgboost trees have no numeric quantization (their thresholds are exact float splits); "
        "convert to ONNX instead with m.convert('onnx'), which is usually faster to serve",
    },
)
