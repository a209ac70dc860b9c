"""aimass quickstart: one ``Model`` over every framework, all local, no service needed.

For each framework installed, this trains (or builds) a small real model on the same toy task,
wraps it with ``Model.load``, predicts, predicts in batches, calls it asynchronously, saves it as
a package and loads it back, and checks the reloaded model answers the same.

Run:  .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aimass import BackendUnavailable, Model, SchemaError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the demo


def dataset(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem on 4 features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


X, Y = dataset()


def train_torch_mlp() -> Any:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(Y)).backward()
        opt.step()
    return net.eval()


def build_torch(workdir: Path) -> Model:
    # A module does not record its input shape: one example row tells aimass.
    return Model.load(train_torch_mlp(), example_input={"x": X[:2]}, name="torch-mlp")


def build_onnx(workdir: Path) -> Model:
    # The same kind of model as a file, exported by torch: Model.load only sees the .onnx file.
    import torch

    path = workdir / "mlp.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        train_torch_mlp(),
        (torch.from_numpy(X[:2]),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    return Model.load(path)


def build_xgboost(workdir: Path) -> Model:
    import xgboost as xgb

    clf = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X, Y)
    return Model.load(clf, name="xgb-classifier")


def build_keras(workdir: Path) -> Model:
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(X, Y, epochs=20, batch_size=64, verbose=0)
    return Model.load(net, name="keras-mlp")


def build_savedmodel(workdir: Path) -> Model:
    # A TensorFlow SavedModel directory: the schema comes from its serving signature.
    build_keras(workdir).backend.model.export(str(workdir / "savedmodel"), verbose=False)  # type: ignore[attr-defined]
    return Model.load(workdir / "savedmodel", name="savedmodel")


def build_tflite(workdir: Path) -> Model:
    # The same network converted to TFLite, run by the LiteRT interpreter.
    import tensorflow as tf

    if not (workdir / "savedmodel").exists():
        build_savedmodel(workdir)
    data = tf.lite.TFLiteConverter.from_saved_model(str(workdir / "savedmodel")).convert()
    (workdir / "mlp.tflite").write_bytes(data)
    return Model.load(workdir / "mlp.tflite")


def build_mxnet(workdir: Path) -> Model:
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()  # restores numpy aliases mxnet 1.9 still uses (see docs/backends.md)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(16, activation="relu"), mx.gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier())
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.05})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    data, label = mx.nd.array(X), mx.nd.array(Y)
    for _ in range(50):
        with mx.autograd.record():
            loss = loss_fn(net(data), label)
        loss.backward()
        trainer.step(len(X))
    net.hybridize()
    return Model.load(net, example_input={"data": X[:2]}, name="mxnet-mlp")


BUILDERS: dict[str, Callable[[Path], Model]] = {
    "torch": build_torch,
    "onnx": build_onnx,
    "xgboost": build_xgboost,
    "keras": build_keras,
    "savedmodel": build_savedmodel,
    "tflite": build_tflite,
    "mxnet": build_mxnet,
}


def accuracy(out: dict[str, np.ndarray]) -> float:
    scores = out.get("probabilities", next(iter(out.values())))
    return float((scores.argmax(axis=1) == Y).mean())


def demo(framework: str, build: Callable[[Path], Model], workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    model = build(workdir)
    print(f"\n== {framework}: {model}")
    out = model.predict(X)  # a bare array works for one-input models
    batched = model.predict_batch(X, batch_size=256, progress=False)
    first = next(iter(out))
    assert np.allclose(batched[first], out[first], atol=1e-5), "predict_batch must equal predict"
    async_out = asyncio.run(model.apredict(X[:5]))
    assert np.allclose(async_out[first], out[first][:5], atol=1e-5)
    package = model.save(workdir / f"{framework}-pkg")
    reloaded = Model.load(package)
    same = all(np.allclose(reloaded.predict(X)[k], v, atol=1e-6) for k, v in out.items())
    try:
        model.predict(np.zeros((2, 5), np.float32))
    except SchemaError as e:
        print(f"   bad input -> SchemaError: {e}")
    return {
        "framework": framework,
        "backend": model.backend_name,
        "accuracy": accuracy(out),
        "reloaded identical": same,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="aimass-quickstart-"))
    rows = []
    for framework, build in BUILDERS.items():
        try:
            rows.append(demo(framework, build, workdir))
        except (BackendUnavailable, ImportError) as e:
            print(f"\n== {framework}: skipped ({e})")
    print("\nframework  backend   accuracy  save->load identical  seconds")
    for r in rows:
        print(
            f"{r['framework']:<10} {r['backend']:<9} {r['accuracy']:8.3f}  "
            f"{r['reloaded identical']!s:<20}  {r['seconds']:6.2f}"
        )
    if not all(r["reloaded identical"] for r in rows):
        raise SystemExit("a reloaded model answered differently")
    print(f"\npackages written under {workdir}")


if __name__ == "__main__":
    main()
