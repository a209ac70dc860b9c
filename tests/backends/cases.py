"""The backend cases the conformance suite runs against.

A case builds a real model and returns it as a :class:`aimass.Model`. Adding a backend means
adding cases here; the suite in ``test_conformance.py`` has no per-backend branches.
``tolerance`` is the absolute error allowed between batch-1 and batch-N results (float kernels
may pick different blockings for different batch sizes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import models
import pytest

from aimass import Model


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], Model]
    framework: str  # module that must be importable, or the case is skipped
    tolerance: float = 1e-5
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _torch_module(tmp: Path) -> Model:
    x, _ = models.dataset(8)
    return Model.load(models.torch_mlp(), example_input={"x": x})


def _torch_export_file(tmp: Path) -> Model:
    import torch

    x, _ = models.dataset(8)
    program = torch.export.export(
        models.torch_mlp(), (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp / "mlp.pt2"))
    return Model.load(tmp / "mlp.pt2")


def _torchscript_file(tmp: Path) -> Model:
    import torch

    torch.jit.script(models.torch_mlp()).save(str(tmp / "mlp.ts"))
    x, _ = models.dataset(8)
    return Model.load(tmp / "mlp.ts", example_input=x)


def _xgb_file(tmp: Path) -> Model:
    models.xgb_classifier().get_booster().save_model(str(tmp / "clf.json"))
    return Model.load(tmp / "clf.json")


def _keras_file(tmp: Path) -> Model:
    models.keras_mlp().save(str(tmp / "mlp.keras"))
    return Model.load(tmp / "mlp.keras")


def _mxnet_block(tmp: Path) -> Model:
    return Model.load(models.mxnet_mlp(), example_input={"data": models.dataset(8)[0]})


def _mxnet_exported_pair(tmp: Path) -> Model:
    return Model.load(models.mxnet_exported(tmp / "mlp"), example_input=models.dataset(8)[0])


def _remote(tmp: Path, source: Path, base: str, options: dict[str, object]) -> Model:
    """Serve a local model through our ASGI app in-process and load it back by URL."""
    from aimass.backends.remote import mount
    from aimass.server import create_app

    mount(base, create_app({"m": Model.load(source)}))
    return Model.load(f"{base}/v2/models/m", options=options)


CASES: list[Case] = [
    Case("onnx-file", lambda tmp: Model.load(models.onnx_mlp(tmp / "mlp.onnx")), "onnxruntime"),
    Case("onnx-two-inputs", lambda tmp: Model.load(models.onnx_two_inputs(tmp / "two.onnx")), "onnxruntime"),
    Case("torch-module", _torch_module, "torch"),
    Case("torch-export-file", _torch_export_file, "torch"),
    Case("torchscript-file", _torchscript_file, "torch"),
    Case("xgboost-classifier", lambda tmp: Model.load(models.xgb_classifier()), "xgboost"),
    Case("xgboost-binary", lambda tmp: Model.load(models.xgb_binary()), "xgboost"),
    Case("xgboost-regressor", lambda tmp: Model.load(models.xgb_regressor()), "xgboost"),
    Case("xgboost-json-file", _xgb_file, "xgboost"),
    Case(
        "remote-onnx-json",
        lambda tmp: _remote(
            tmp, models.onnx_mlp(tmp / "mlp.onnx"), "http://remote-json.test", {"binary_threshold": None}
        ),
        "httpx",
    ),
    Case(
        "remote-onnx-two-inputs-binary",
        lambda tmp: _remote(
            tmp, models.onnx_two_inputs(tmp / "two.onnx"), "http://remote-bin.test", {"binary_threshold": 0}
        ),
        "httpx",
    ),
    Case("keras-object", lambda tmp: Model.load(models.keras_mlp()), "tensorflow"),
    Case("keras-file", _keras_file, "tensorflow"),
    Case("savedmodel-dir", lambda tmp: Model.load(models.keras_savedmodel(tmp / "sm")), "tensorflow"),
    Case("tflite-file", lambda tmp: Model.load(models.tflite_mlp(tmp / "mlp.tflite")), "ai_edge_litert"),
    Case("mxnet-block", _mxnet_block, "mxnet"),
    Case("mxnet-exported-pair", _mxnet_exported_pair, "mxnet"),
]
