"""Builders of small real models, one per framework, shared by every test module.

Each builder trains or constructs a real model with its own framework; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 4


def dataset(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A separable 3-class problem on 4 float32 features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def onnx_mlp(path: Path, hidden: int = 8, outputs: int = 3, seed: int = 0) -> Path:
    """A 4 -> hidden -> outputs MLP with ReLU, written with onnx.helper (input 'x', output 'y')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((N_FEATURES, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, outputs)).astype(np.float32)
    b2 = rng.standard_normal(outputs).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_two_inputs(path: Path) -> Path:
    """y = x * scale (FP32 [-1, 4] times INT64 [-1, 1] cast to float): two inputs of different dtypes."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["scale"], ["s"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scale",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N_FEATURES]),
            helper.make_tensor_value_info("scale", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N_FEATURES])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def onnx_residual_layernorm(hidden: int = 8, gamma: float = 1.5, beta: float = 0.1) -> bytes:
    """``LayerNorm(x + skip)`` over the last axis: the block every post-LN transformer layer ends with."""
    from onnx import TensorProto, helper, numpy_helper

    shape: list[str | int] = ["batch", "seq", hidden]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
        ],
        "residual",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.full(hidden, v, np.float32), n) for n, v in (("gamma", gamma), ("beta", beta))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _torch_mlp_class() -> Any:
    import torch

    class TorchMLP(torch.nn.Module):
        """Module-level (importable) so that pickling tests can save whole modules."""

        def __init__(self, hidden: int = 8, outputs: int = 3) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(N_FEATURES, hidden)
            self.fc2 = torch.nn.Linear(hidden, outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    TorchMLP.__module__ = __name__
    TorchMLP.__qualname__ = "TorchMLP"
    return TorchMLP


def __getattr__(name: str) -> Any:
    # The torch class is built on first use so that importing this module does not import torch.
    if name == "TorchMLP":
        cls = _torch_mlp_class()
        globals()["TorchMLP"] = cls
        return cls
    raise AttributeError(name)


def torch_mlp(hidden: int = 8, outputs: int = 3, seed: int = 0) -> Any:
    """A two-layer torch MLP trained briefly on :func:`dataset`; ``forward(x)``."""
    import torch

    torch.manual_seed(seed)
    TorchMLP = __getattr__("TorchMLP")
    net = TorchMLP(hidden, outputs)
    x, y = dataset()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    return net.eval()


def xgb_classifier(n_estimators: int = 10) -> Any:
    import xgboost as xgb

    x, y = dataset()
    return xgb.XGBClassifier(n_estimators=n_estimators, max_depth=3, tree_method="hist").fit(x, y)


def xgb_binary(n_estimators: int = 10) -> Any:
    import xgboost as xgb

    x, y = dataset()
    return xgb.XGBClassifier(n_estimators=n_estimators, max_depth=3).fit(x, (y > 0).astype(int))


def xgb_regressor(n_estimators: int = 10) -> Any:
    import xgboost as xgb

    x, _ = dataset()
    target = x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    return xgb.XGBRegressor(n_estimators=n_estimators, max_depth=3).fit(x, target)


_KERAS_WEIGHTS: dict[tuple[int, int, int], list[np.ndarray]] = {}


def keras_mlp(hidden: int = 8, outputs: int = 3, seed: int = 0) -> Any:
    """A functional Keras 3 MLP (input layer 'x', output layer 'logits') trained briefly on :func:`dataset`.

    Trained once per process and arguments; later calls build a fresh model with those weights.
    """
    import keras

    def build() -> Any:
        inp = keras.Input((N_FEATURES,), name="x")
        h = keras.layers.Dense(hidden, activation="relu", name="hidden")(inp)
        return keras.Model(inp, keras.layers.Dense(outputs, name="logits")(h), name="keras_mlp")

    key = (hidden, outputs, seed)
    if key not in _KERAS_WEIGHTS:
        keras.utils.set_random_seed(seed)
        trained = build()
        x, y = dataset()
        trained.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(True))
        trained.fit(x, y, epochs=5, batch_size=64, verbose=0)
        _KERAS_WEIGHTS[key] = trained.get_weights()
    model = build()
    model.set_weights(_KERAS_WEIGHTS[key])
    return model


def keras_savedmodel(directory: Path) -> Path:
    """:func:`keras_mlp` exported as a SavedModel directory (signature ``serving_default``: x -> output_0)."""
    keras_mlp().export(str(directory), verbose=False)
    return directory


def tflite_mlp(path: Path) -> Path:
    """:func:`keras_mlp` converted to a ``.tflite`` file with a dynamic batch dimension."""
    import tensorflow as tf

    saved = keras_savedmodel(path.with_suffix(".savedmodel"))
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    return path


def two_signature_savedmodel(directory: Path) -> Path:
    """A SavedModel with signatures ``double`` (x -> y) and ``triple`` (x FP32, n INT32 -> y, n2); no default."""
    import tensorflow as tf

    class Scaler(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def double(self, x: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, self.w) * 2.0}

        @tf.function(
            input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"), tf.TensorSpec([None], tf.int32, name="n")]
        )
        def triple(self, x: Any, n: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, self.w) * 3.0, "n2": n * 2}

    module = Scaler()
    tf.saved_model.save(module, str(directory), signatures={"double": module.double, "triple": module.triple})
    return directory


def mxnet_mlp(hidden: int = 8, outputs: int = 3, seed: int = 0) -> Any:
    """A Gluon ``HybridSequential`` MLP (not hybridized) trained briefly on :func:`dataset`."""
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()  # restores the numpy aliases mxnet 1.9.1 needs before importing it
    mx.random.seed(seed)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(hidden, activation="relu", in_units=N_FEATURES))
    net.add(mx.gluon.nn.Dense(outputs, in_units=hidden))
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.05})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    x, y = dataset()
    data, label = mx.nd.array(x), mx.nd.array(y)
    for _ in range(30):
        with mx.autograd.record():
            loss = loss_fn(net(data), label)
        loss.backward()
        trainer.step(len(x))
    return net


def mxnet_exported(prefix: Path) -> Path:
    """:func:`mxnet_mlp` hybridized and exported as ``<prefix>-symbol.json`` + ``<prefix>-0000.params``."""
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()
    net = mxnet_mlp()
    net.hybridize()
    net(mx.nd.array(dataset(2)[0]))  # export needs one hybridized forward pass
    net.export(str(prefix))
    return prefix.parent / f"{prefix.name}-symbol.json"


def bert_sentence_encoder(seed: int = 0, weights: Path | None = None, **config: Any) -> Any:
    """BERT from ``BertConfig(**config)`` (random weights, or ``weights``: a local pretrained directory, no hub)
    plus attention-masked mean pooling: ``(input_ids, attention_mask) -> one embedding per sentence``.

    Example: ``bert_sentence_encoder(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)``
    """
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    if weights is not None:
        bert = BertModel.from_pretrained(str(weights), add_pooling_layer=False).eval()
    else:
        bert = BertModel(BertConfig(**config), add_pooling_layer=False).eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # an all-padding row: zeros, not NaN

    return SentenceEncoder().eval()
