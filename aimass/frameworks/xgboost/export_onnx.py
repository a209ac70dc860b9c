"""XGBoost -> ONNX with onnxmltools (``target_opset=15``, the newest its converter supports).

Classifiers give ``label`` (INT64) and ``probabilities``; regressors ``prediction``: the same
names and shapes as the xgboost backend once :func:`aimass.frameworks.onnx.graph.align` has run.

Example:
    >>> o = convert(Model.load(xgb_classifier), "onnx")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from aimass.dependencies import require
from aimass.errors import ConversionError
from aimass.frameworks.xgboost.backend import XGBoostBackend

__all__ = ["xgboost_to_onnx"]

TARGET_OPSET = 15  # onnxmltools 1.16 refuses newer opsets for xgboost ("converter support 15")


def xgboost_to_onnx(backend: XGBoostBackend, *, opset: int | None = None) -> Any:
    """The ``onnx.ModelProto`` of an xgboost backend's booster (names not yet aligned)."""
    onnxmltools = require("onnxmltools", feature="compression and conversion", extra="compress")
    types = require("onnxmltools.convert.common.data_types", feature="compression and conversion", extra="compress")
    booster = XGBoostBackend.of(backend).booster
    spec = backend.schema.inputs[0]
    try:
        return onnxmltools.convert_xgboost(
            booster,
            initial_types=[(spec.name, types.FloatTensorType([None, spec.shape[1]]))],
            target_opset=opset or TARGET_OPSET,
        )
    except Exception as e:  # onnxmltools raises RuntimeError/NotImplementedError for unsupported objectives
        raise ConversionError(f"onnxmltools could not convert this booster: {type(e).__name__}: {e}") from e
