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
from dataclasses import dataclass, field
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
    env: dict[str, str] = field(default_factory=dict)  # for the document's shell blocks
    ports: dict[int, int] = field(default_factory=dict)  # a documented port -> the one this run uses

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


def build(names: list[str], context: Context) -> None:
    """Run the named setups for a document (an unknown name is a mistake in the document)."""
    for name in names:
        if name not in SETUPS:
            raise KeyError(f"docs-test setup {name!r} is not one of {sorted(SETUPS)}")
        SETUPS[name](context)


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


@setup("big")
def big(ctx: Context) -> None:
    """``big``: 5000 rows of 4 float32 features, more than one batch of 1024."""
    ctx.namespace.update(big=models.dataset(5000, seed=3)[0])


@setup("../fix/encoder.onnx")
def external_data(ctx: Context) -> None:
    """``../fix/encoder.onnx`` + ``encoder.onnx.data``: an MLP whose weights live in the data file."""

    def write(d: Path) -> None:
        import onnx

        models.onnx_mlp(d / "mlp.onnx")
        proto = onnx.load(str(d / "mlp.onnx"))
        (d / "mlp.onnx").unlink()
        onnx.save_model(
            proto,
            str(d / "encoder.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="encoder.onnx.data",
            size_threshold=0,
        )

    Context(ctx.directory.parent / "fix", ctx.namespace).files("fix", write)  # beside the working directory


@setup("encoder.onnx")
def encoder_onnx(ctx: Context) -> None:
    """``encoder.onnx``: the 4 -> 8 -> 3 MLP of tests/models.py, weights inside the file."""
    ctx.files("encoder.onnx", lambda d: models.onnx_mlp(d / "encoder.onnx") and None)


@setup("sklearn")
def sklearn(ctx: Context) -> None:
    """``LogisticRegression``, ``SGDClassifier`` and ``custom.skops``: a ``mymod.MyEstimator`` saved with skops."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    ctx.namespace.update(LogisticRegression=LogisticRegression, SGDClassifier=SGDClassifier)
    source = (
        "from sklearn.linear_model import LogisticRegression\n\n\nclass MyEstimator(LogisticRegression):\n    pass\n"
    )

    def write(d: Path) -> None:
        import importlib.util

        import skops.io

        (d / "mymod.py").write_text(source)
        spec = importlib.util.spec_from_file_location("mymod", d / "mymod.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["mymod"] = module  # skops records the class by its module's name
        spec.loader.exec_module(module)
        skops.io.dump(module.MyEstimator().fit(*models.dataset()), d / "custom.skops")
        del sys.modules["mymod"]

    ctx.files("sklearn", write)


@setup("keras_model")
def keras_model(ctx: Context) -> None:
    """``keras_model`` (a functional Keras MLP) and ``mlp.keras``."""
    ctx.namespace.update(keras_model=models.keras_mlp())
    ctx.files("mlp.keras", lambda d: models.keras_mlp().save(str(d / "mlp.keras")))


@setup("exported/")
def savedmodels(ctx: Context) -> None:
    """``tf``, ``exported/`` (a Keras MLP as a SavedModel) and ``multi/`` (signatures double and triple)."""
    import tensorflow as tf

    ctx.namespace.update(tf=tf)

    def write(d: Path) -> None:
        models.keras_savedmodel(d / "exported")
        models.two_signature_savedmodel(d / "multi")

    ctx.files("savedmodels", write)


@setup("mlp.tflite")
def tflite(ctx: Context) -> None:
    def write(d: Path) -> None:
        models.tflite_mlp(d / "mlp.tflite")
        shutil.rmtree(d / "mlp.savedmodel")

    ctx.files("mlp.tflite", write)


@setup("mxnet")
def mxnet(ctx: Context) -> None:
    """``block`` (a Gluon MLP), ``x`` and ``mlp-symbol.json`` + ``mlp-0000.params``."""
    ctx.namespace.update(block=models.mxnet_mlp(), x=models.dataset()[0])
    ctx.files("mxnet", lambda d: models.mxnet_exported(d / "mlp") and None)


@setup("teacher_model")
def teacher(ctx: Context) -> None:
    """``teacher_model``: the torch MLP as a Model, for distillation."""
    import torch

    from aimass import Model

    x = models.dataset()[0]
    ctx.namespace.update(torch=torch, teacher_model=Model.load(models.torch_mlp(hidden=32), example_input=x[:2]))


@setup("library")
def library(ctx: Context) -> None:
    """docs/library.md's names: ``model`` (XGBoost), train/test/new data, ``rows`` whose first feature drifted."""
    x = models.dataset(256)[0]
    x_new, y_new = models.dataset(256, seed=4)
    drifted = x_new.copy()
    drifted[:, 0] += 4.0
    ctx.namespace.update(
        model=models.xgb_classifier(),
        x_train=x,
        x_test=x_new[:128],
        y_test=y_new[:128],
        rows=drifted,
        new_rows=x_new[128:],
        new_labels=y_new[128:],
        x_new=x_new[:128],
        y_new=y_new[:128],
    )


@setup("library/")
def served_library(ctx: Context) -> None:
    """``library/``: a library with fraud versions 1 to 4, alias production -> 3; ``pkg/fraud``; ``TOKEN``."""

    def write(d: Path) -> None:
        from aimass import Model
        from aimass.store import Store

        _fraud_onnx(d / "fraud.onnx")
        store = Store(str(d / "library"))
        m = Model.load(d / "fraud.onnx")
        versions = [store.publish(m, "fraud") for _ in range(4)]
        store.set_alias("fraud", "production", versions[2])
        m.save(d / "pkg" / "fraud")

    ctx.files("library", write)
    ctx.env["TOKEN"] = "docs-test-token"


@setup("featurize")
def featurize(ctx: Context) -> None:
    """``featurize`` (texts -> FP32 [n, 4]), ``enc.onnx`` (-> probabilities [n, 2]) and ``labels.txt`` (ok toxic)."""
    rude = ("awful", "idiot", "stupid")

    def featurize(texts: Any) -> np.ndarray:
        bad = np.array([any(w in str(t) for w in rude) for t in texts], dtype=np.float32)
        return np.stack([1 - bad, bad, np.zeros_like(bad), np.zeros_like(bad)], axis=1)

    def write(d: Path) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        w = np.array([[4, 0], [0, 4], [0, 0], [0, 0]], dtype=np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["probabilities"])],
            "enc",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
            initializer=[numpy_helper.from_array(w, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(d / "enc.onnx"))
        (d / "labels.txt").write_text("ok toxic\n")

    ctx.namespace.update(featurize=featurize)
    ctx.files("featurize", write)


def _example(name: str) -> Any:
    """An example script as a module of its own name (a Python model's code is saved by module)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ROOT = Path(__file__).resolve().parents[2]


@setup("packages/classifier")
def classifier(ctx: Context) -> None:
    """examples/image_classifier.py's package as ``packages/classifier``, ``cat.jpg``, ``jpeg_bytes``, ``client``."""
    example = _example("image_classifier")

    def write(d: Path) -> None:
        from aimass import Model

        (d / "labels.txt").write_text("\n".join(example.LABELS))
        artifacts = {"cnn": example.train_cnn(d / "cnn.onnx"), "labels": d / "labels.txt"}
        Model.load(example.ImageClassifier(), artifacts=artifacts).save(d / "packages" / "classifier")
        for name in ("labels.txt", "cnn.onnx"):
            (d / name).unlink()
        image = example.draw("circle", np.random.default_rng(0))
        (d / "cat.jpg").write_bytes(example.encoded(image, "JPEG"))

    ctx.files("classifier", write)
    import tritonclient.http as httpclient

    ctx.namespace.update(
        jpeg_bytes=(ctx.directory / "cat.jpg").read_bytes(),
        client=httpclient.InferenceServerClient(url=f"127.0.0.1:{ctx.ports[8000]}"),
    )


@setup("my-moderation-model")
def moderation(ctx: Context) -> None:
    """``my-moderation-model/``: examples/text_moderation.py's BERT classifier and tokenizer; ``sample_posts``."""
    example = _example("text_moderation")
    posts, labels = example.labelled_posts()

    def write(d: Path) -> None:
        tok = example.make_tokenizer(posts)
        example.train(posts, labels, tok, steps=30).save_pretrained(str(d / "my-moderation-model"))
        tok.save_pretrained(str(d / "my-moderation-model"))

    ctx.files("my-moderation-model", write)
    ctx.namespace.update(sample_posts=posts)


@setup("policies.yaml")
def policies(ctx: Context) -> None:
    """``policies.yaml``: examples/policies.yaml, every field documented, for the fraud model."""
    shutil.copy(ROOT / "examples" / "policies.yaml", ctx.directory / "policies.yaml")


@setup("AIMASS_STORE=library")
def store_is_library(ctx: Context) -> None:
    """The shell blocks' library (``AIMASS_STORE``) is ``library/``, the one the server serves."""
    ctx.env["AIMASS_STORE"] = str(ctx.directory / "library")
