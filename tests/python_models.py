"""PythonModel classes the tests wrap, save and load: a module of its own, so a package copies only it.

* :class:`Scaled`: FP32 rows scaled by factors read from a text artifact, then a nested ONNX MLP.
* :class:`TextScorer`: sentences (BYTES) -> features -> nested ONNX MLP -> ``label`` (BYTES, from a
  labels file), ``probabilities`` and ``normalized`` (the sentence, lower-cased: each caller can
  check it got its own row back).
* :class:`Faulty`: the nested ONNX MLP behind a fault read from a text artifact: ``fail`` raises on
  every call, ``slow <seconds>`` sleeps first (a canary that errs or slows down).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import text_features  # an extra code file (TextScorer.code), packaged beside this module

from aimass import PythonModel
from aimass.python_model import Context
from aimass.schema import Schema, TensorSpec, as_text


class Scaled(PythonModel):
    schema = Schema(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, 3])],
    )

    def setup(self, context: Context) -> None:
        self.scale = np.array(context.path("scale").read_text().split(), dtype=np.float32)
        self.mlp = context.model("mlp")

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        return self.mlp.predict(inputs["x"] * self.scale)


class TextScorer(PythonModel):
    schema = Schema(
        inputs=[TensorSpec(name="text", dtype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="label", dtype="BYTES", shape=[-1]),
            TensorSpec(name="probabilities", dtype="FP32", shape=[-1, 3]),
            TensorSpec(name="normalized", dtype="BYTES", shape=[-1]),
        ],
    )
    code = ("text_features.py",)

    def setup(self, context: Context) -> None:
        self.labels = np.array(context.path("labels").read_text(encoding="utf-8").split(), dtype=object)
        self.mlp = context.model("mlp")

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        texts = as_text(inputs["text"], "text")  # SchemaError for bytes that are not UTF-8
        logits = self.mlp.predict(text_features.features(texts))["y"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = e / e.sum(axis=1, keepdims=True)
        return {
            "label": self.labels[probabilities.argmax(axis=1)],
            "probabilities": probabilities,
            "normalized": [t.lower() for t in texts],
        }


class Faulty(PythonModel):
    schema = Scaled.schema

    def setup(self, context: Context) -> None:
        self.fault = context.path("fault").read_text().split()
        self.mlp = context.model("mlp")

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        if self.fault[0] == "fail":
            raise RuntimeError("injected fault")
        if self.fault[0] == "slow":
            time.sleep(float(self.fault[1]))
        return self.mlp.predict(inputs)
