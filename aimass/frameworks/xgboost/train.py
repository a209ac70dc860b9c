"""XGBoost training for ``update()``: continued boosting with the booster's own objective and tree parameters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from aimass.dependencies import require
from aimass.frameworks.xgboost.backend import XGBoostBackend

__all__ = ["train"]

# Tree parameters carried over from the booster's saved config into continued boosting.
_XGB_TREE_PARAMS = ("eta", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "lambda", "alpha", "gamma")


def train(
    backend: XGBoostBackend, inputs: dict[str, np.ndarray], y: np.ndarray, *, rounds: int = 10, **_: Any
) -> XGBoostBackend:
    """``rounds`` more trees of continued boosting on a copy of the booster."""
    xgb = require("xgboost", feature="xgboost training", extra="xgboost")
    booster = XGBoostBackend.of(backend).booster
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
    x = inputs[backend.schema.input_names[0]]
    dtrain = xgb.DMatrix(x, label=y)
    new = xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=booster.copy(), verbose_eval=False)
    return XGBoostBackend(new, backend.device, backend.schema)
