"""The small inputs documentation blocks assume, by the name a ``<!-- docs-test: setup NAME -->`` gives.

A setup that writes files builds them once per session under ``CACHE`` and copies them into each
document's scratch directory; names in the namespace (``rows``, ``x``, ``torch_module`` ...) are
built for each document, so one document's edits never reach another.

Example: ``<!-- docs-test: setup fraud.onnx rows -->`` before a block that calls
``Model.load("fraud.onnx").predict(rows)``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared model builders

import models

CACHE = Path(tempfile.gettempdir()) / "aimass-docs-cache"  # the test points it at its session directory


@dataclass
class Context:
    """Where a setup writes (the document's working directory) and the namespace its blocks share."""

    directory: Path
    namespace: dict[str, Any]

    def files(self, name: str, write: Callable[[Path], None]) -> None:
        """Copy the files ``write(folder)`` writes into the directory, writing them once per session."""
        cached = CACHE / name.replace("/", "_")
        if not cached.exists():
            building = Path(tempfile.mkdtemp(dir=CACHE.parent if CACHE.parent.exists() else None))
            write(building)
            CACHE.mkdir(parents=True, exist_ok=True)
            building.rename(cached)
        shutil.copytree(cached, self.directory, dirs_exist_ok=True)


SETUPS: dict[str, Callable[[Context], None]] = {}


def setup(name: str) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    def register(function: Callable[[Context], None]) -> Callable[[Context], None]:
        SETUPS[name] = function
        return function

    return register


def build(names: list[str], directory: Path, namespace: dict[str, Any]) -> None:
    """Run the named setups for a document (an unknown name is a mistake in the document)."""
    for name in names:
        if name not in SETUPS:
            raise KeyError(f"docs-test setup {name!r} is not one of {sorted(SETUPS)}")
        SETUPS[name](Context(directory, namespace))


def _fraud_onnx(path: Path) -> None:
    """x FP32 [-1, 4] -> probabilities FP32 [-1, 2]: a small MLP with a softmax, as README shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 16)).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((16, 2)).astype(np.float32),
        "b2": np.zeros(2, np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h1"]),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@setup("fraud.onnx")
def fraud_onnx(ctx: Context) -> None:
    ctx.files("fraud.onnx", lambda d: _fraud_onnx(d / "fraud.onnx"))


@setup("rows")
def rows(ctx: Context) -> None:
    """``rows`` (float32 [512, 4]) and their labels ``y`` (0/1/2), ``rows.npy``, ``y.npy``, ``rows.csv``."""
    x, y = models.dataset(512, seed=1)
    ctx.namespace.update(rows=x, y=y, np=np)

    def write(d: Path) -> None:
        np.save(d / "rows.npy", x)
        np.save(d / "y.npy", y)
        lines = ["id,f0,f1,f2,f3"] + [f"{i}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(x)]
        (d / "rows.csv").write_text("\n".join(lines) + "\n")

    ctx.files("rows", write)


@setup("models/")
def repository(ctx: Context) -> None:
    """``models/fraud/1/``: fraud.onnx as a package in a serving repository."""

    def write(d: Path) -> None:
        from aimass import Model

        _fraud_onnx(d / "fraud.onnx")
        Model.load(d / "fraud.onnx").save(d / "models" / "fraud" / "1")
        (d / "fraud.onnx").unlink()

    ctx.files("models", write)


@setup("aimass.toml")
def config(ctx: Context) -> None:
    """``aimass.toml`` naming ``fraud``: the local file, as in docs/serving.md."""
    fraud_onnx(ctx)
    (ctx.directory / "aimass.toml").write_text('[models.fraud]\nuri = "fraud.onnx"\n')


@setup("mlp.onnx")
def mlp_onnx(ctx: Context) -> None:
    """x FP32 [-1, 4] -> y FP32 [-1, 3] (tests/models.py's onnx_mlp); also as model.bin and model.onnx."""

    def write(d: Path) -> None:
        models.onnx_mlp(d / "mlp.onnx")
        shutil.copy(d / "mlp.onnx", d / "model.bin")
        shutil.copy(d / "mlp.onnx", d / "model.onnx")

    ctx.files("mlp.onnx", write)


@setup("x")
def features(ctx: Context) -> None:
    """``x``, ``X``, ``x_train``, ``x_test``, ``x_new`` and their labels: the 3-class data of tests/models.py."""
    x, y = models.dataset(256)
    x_new, y_new = models.dataset(128, seed=2)
    ctx.namespace.update(
        np=np,
        x=x,
        y=y,
        X=x,
        x_train=x,
        y_train=y,
        x_test=x_new,
        y_test=y_new,
        x_new=x_new,
        y_new=y_new,
        X_new=x_new,
    )


@setup("torch_module")
def torch_module(ctx: Context) -> None:
    """``torch``, ``torch_module`` and ``net``: a trained 4 -> 8 -> 3 torch MLP."""
    import torch

    net = models.torch_mlp()
    ctx.namespace.update(torch=torch, torch_module=net, net=net)


@setup("xgb_classifier")
def xgb_classifier(ctx: Context) -> None:
    """``xgb_classifier`` (10 trees, 3 classes) and ``clf.json``, its XGBoost JSON file."""
    clf = models.xgb_classifier()
    ctx.namespace.update(xgb_classifier=clf)
    ctx.files("clf.json", lambda d: clf.save_model(str(d / "clf.json")))


@setup("pkg/")
def package(ctx: Context) -> None:
    """``pkg/``: mlp.onnx saved as an aimass package."""

    def write(d: Path) -> None:
        from aimass import Model

        models.onnx_mlp(d / "mlp.onnx")
        Model.load(d / "mlp.onnx").save(d / "pkg")
        (d / "mlp.onnx").unlink()

    ctx.files("pkg", write)
