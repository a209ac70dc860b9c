"""The backend cases the conformance suite runs against.

A case builds a real model and returns it as a :class:`aimass.Model`. Adding a backend means
adding cases here; the suite (:class:`aimass.testing.BackendConformance`, run over these cases by
``test_conformance.py``) has no per-backend branches. ``tolerance`` is the absolute error allowed
between batch-1 and batch-N results (float kernels may pick different blockings for different
batch sizes), and between aimass and the raw framework.

``reference(tmp, inputs)`` runs the raw framework (onnxruntime, ``torch`` forward, xgboost's
``predict_proba``/``predict``, ``keras`` call, ...) on the same model ``build(tmp)`` loaded, from the
files build left in ``tmp`` or from the object it kept with :func:`_keep`, and returns outputs keyed
like the Model's. A remote case's reference runs the model it serves locally, through its framework;
a composed case's runs its parts through onnxruntime and combines them by hand.
A case with no reference must say why in ``no_reference``: the conformance suite fails it otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model
from aimass.testing import Case

__all__ = ["CASES", "Case"]

# The framework object each build loaded, by its tmp directory: its reference calls that very object.
_NATIVE: dict[Path, Any] = {}


def _keep(tmp: Path, obj: Any) -> Any:
    _NATIVE[tmp] = obj
    return obj


# --- builders ----------------------------------------------------------------------------------------


def _torch_module(tmp: Path) -> Model:
    x, _ = models.dataset(8)
    return Model.load(_keep(tmp, models.torch_mlp()), example_input={"x": x})


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
    return Model.load(tmp / "mlp.ts", example_input=x, trust_code=True)  # TorchScript is a program: trust


def _xgb_object(builder: Callable[[], Any]) -> Callable[[Path], Model]:
    return lambda tmp: Model.load(_keep(tmp, builder()))


def _xgb_file(tmp: Path) -> Model:
    models.xgb_classifier().get_booster().save_model(str(tmp / "clf.json"))
    return Model.load(tmp / "clf.json")


def _keras_file(tmp: Path) -> Model:
    models.keras_mlp().save(str(tmp / "mlp.keras"))
    return Model.load(tmp / "mlp.keras")


def _keras_object(tmp: Path) -> Model:
    return Model.load(_keep(tmp, models.keras_mlp()))


def _mxnet_block(tmp: Path) -> Model:
    return Model.load(_keep(tmp, models.mxnet_mlp()), example_input={"data": models.dataset(8)[0]})


def _mxnet_exported_pair(tmp: Path) -> Model:
    return Model.load(models.mxnet_exported(tmp / "mlp"), example_input=models.dataset(8)[0])


def _remote(tmp: Path, source: Path, base: str, options: dict[str, object]) -> Model:
    """Serve a local model through our ASGI app in-process and load it back by URL."""
    from aimass.backends.remote import mount
    from aimass.server import create_app

    mount(base, create_app({"m": Model.load(source)}))
    return Model.load(f"{base}/v2/models/m", options=options)


# --- references: the raw framework on the same model ---------------------------------------------------

Arrays = dict[str, np.ndarray]


def _onnxruntime(file: str) -> Callable[[Path, Arrays], Arrays]:
    def run(tmp: Path, inputs: Arrays) -> Arrays:
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp / file), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def _torch_forward(module: Any, inputs: Arrays) -> Arrays:
    import torch

    with torch.no_grad():
        return {"output": module(torch.from_numpy(inputs["x"])).numpy()}


def _torch_module_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _torch_forward(_NATIVE[tmp], inputs)


def _torch_export_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import torch

    return _torch_forward(torch.export.load(str(tmp / "mlp.pt2")).module(), inputs)


def _torchscript_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        script = torch.jit.load(str(tmp / "mlp.ts"))
    return _torch_forward(script, inputs)


def _xgb_classifier_ref(clf: Any, inputs: Arrays) -> Arrays:
    x = inputs["input"]
    return {"label": clf.predict(x), "probabilities": clf.predict_proba(x)}


def _xgb_object_classifier_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _xgb_classifier_ref(_NATIVE[tmp], inputs)


def _xgb_regressor_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return {"prediction": _NATIVE[tmp].predict(inputs["input"])}


def _xgb_file_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import xgboost as xgb

    clf = xgb.XGBClassifier()
    clf.load_model(str(tmp / "clf.json"))
    return _xgb_classifier_ref(clf, inputs)


def _keras_call(model: Any, inputs: Arrays) -> Arrays:
    return {"logits": np.asarray(model(inputs["x"], training=False))}


def _keras_object_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _keras_call(_NATIVE[tmp], inputs)


def _keras_file_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import keras

    return _keras_call(keras.models.load_model(str(tmp / "mlp.keras")), inputs)


def _savedmodel_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp / "sm")).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def _tflite_ref(tmp: Path, inputs: Arrays) -> Arrays:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(tmp / "mlp.tflite")).get_signature_runner("serving_default")
    return dict(runner(**inputs))


def _mxnet_call(block: Any, inputs: Arrays) -> Arrays:
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()
    return {"output": block(mx.nd.array(inputs["data"], dtype=inputs["data"].dtype)).asnumpy()}


def _mxnet_block_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _mxnet_call(_NATIVE[tmp], inputs)


def _mxnet_exported_ref(tmp: Path, inputs: Arrays) -> Arrays:
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        block = mx.gluon.SymbolBlock.imports(str(tmp / "mlp-symbol.json"), ["data"], str(tmp / "mlp-0000.params"))
    return _mxnet_call(block, inputs)


CASES: list[Case] = [
    Case(
        "onnx-file",
        lambda tmp: Model.load(models.onnx_mlp(tmp / "mlp.onnx")),
        "onnxruntime",
        reference=_onnxruntime("mlp.onnx"),
    ),
    Case(
        "onnx-two-inputs",
        lambda tmp: Model.load(models.onnx_two_inputs(tmp / "two.onnx")),
        "onnxruntime",
        reference=_onnxruntime("two.onnx"),
    ),
    Case("torch-module", _torch_module, "torch", reference=_torch_module_ref),
    Case("torch-export-file", _torch_export_file, "torch", reference=_torch_export_ref),
    Case("torchscript-file", _torchscript_file, "torch", reference=_torchscript_ref, trust_code=True),
    Case(
        "xgboost-classifier",
        _xgb_object(models.xgb_classifier),
        "xgboost",
        reference=_xgb_object_classifier_ref,
    ),
    Case("xgboost-binary", _xgb_object(models.xgb_binary), "xgboost", reference=_xgb_object_classifier_ref),
    Case("xgboost-regressor", _xgb_object(models.xgb_regressor), "xgboost", reference=_xgb_regressor_ref),
    Case("xgboost-json-file", _xgb_file, "xgboost", reference=_xgb_file_ref),
    Case(
        "remote-onnx-json",
        lambda tmp: _remote(
            tmp, models.onnx_mlp(tmp / "mlp.onnx"), "http://remote-json.test", {"binary_threshold": None}
        ),
        "httpx",
        reference=_onnxruntime("mlp.onnx"),  # the served model, run locally
    ),
    Case(
        "remote-onnx-two-inputs-binary",
        lambda tmp: _remote(
            tmp, models.onnx_two_inputs(tmp / "two.onnx"), "http://remote-bin.test", {"binary_threshold": 0}
        ),
        "httpx",
        reference=_onnxruntime("two.onnx"),
    ),
    Case("keras-object", _keras_object, "tensorflow", reference=_keras_object_ref),
    Case("keras-file", _keras_file, "tensorflow", reference=_keras_file_ref),
    Case(
        "savedmodel-dir",
        lambda tmp: Model.load(models.keras_savedmodel(tmp / "sm")),
        "tensorflow",
        reference=_savedmodel_ref,
    ),
    Case(
        "tflite-file",
        lambda tmp: Model.load(models.tflite_mlp(tmp / "mlp.tflite")),
        "ai_edge_litert",
        reference=_tflite_ref,
    ),
    Case("mxnet-block", _mxnet_block, "mxnet", reference=_mxnet_block_ref),
    Case("mxnet-exported-pair", _mxnet_exported_pair, "mxnet", reference=_mxnet_exported_ref),
]


# --- scikit-learn (aimass/frameworks/sklearn): references call the estimator's own predict/predict_proba ---


def _sklearn_fit(kind: str) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y = models.dataset(128)
    if kind == "logreg":
        return LogisticRegression(max_iter=500).fit(x, y)
    if kind == "pipeline-strings":  # string classes: label is the index into classes_
        forest = RandomForestClassifier(n_estimators=8, random_state=0)
        return make_pipeline(StandardScaler(), forest).fit(x, np.array(["a", "b", "c"])[y])
    if kind == "linearsvc":  # no predict_proba: label only
        return LinearSVC().fit(x, y)
    return Ridge().fit(x, x[:, 0] * 2 - x[:, 1])


def _sklearn_object(kind: str) -> Callable[[Path], Model]:
    return lambda tmp: Model.load(_keep(tmp, _sklearn_fit(kind)))


def _sklearn_skops_file(tmp: Path) -> Model:
    import skops.io

    skops.io.dump(_sklearn_fit("ridge"), tmp / "ridge.skops")
    return Model.load(tmp / "ridge.skops")


def _sklearn_outputs(est: Any, inputs: Arrays) -> Arrays:
    from sklearn.base import is_classifier

    x = inputs["input"]
    if not is_classifier(est):
        return {"prediction": est.predict(x)}
    label = est.predict(x)
    if label.dtype.kind not in "biu":
        label = np.searchsorted(est.classes_, label)
    out = {"label": label}
    if hasattr(est, "predict_proba"):
        out["probabilities"] = est.predict_proba(x)
    return out


def _sklearn_object_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _sklearn_outputs(_NATIVE[tmp], inputs)


def _sklearn_skops_ref(tmp: Path, inputs: Arrays) -> Arrays:
    import skops.io

    return _sklearn_outputs(skops.io.load(tmp / "ridge.skops"), inputs)


CASES += [
    Case("sklearn-logreg", _sklearn_object("logreg"), "sklearn", reference=_sklearn_object_ref),
    Case("sklearn-pipeline-strings", _sklearn_object("pipeline-strings"), "sklearn", reference=_sklearn_object_ref),
    Case("sklearn-linearsvc", _sklearn_object("linearsvc"), "sklearn", reference=_sklearn_object_ref),
    Case("sklearn-skops-file", _sklearn_skops_file, "sklearn", reference=_sklearn_skops_ref),
]


# --- compose (aimass/compose.py): pipelines and ensembles of ONNX models; references run the parts ----
# through onnxruntime and combine them by hand.

_ENSEMBLE_WEIGHTS = (0.25, 0.75)


def _compose_pipeline(tmp: Path) -> Model:
    from aimass import compose

    first = Model.load(models.onnx_mlp(tmp / "first.onnx", outputs=4))  # x -> y, FP32 [-1, 4]
    second = Model.load(models.onnx_mlp(tmp / "second.onnx", seed=1))  # x -> y, FP32 [-1, 3]
    # The second step's 'x' is also the pipeline's input: connect it to the first step's output.
    return compose.pipeline(first, second, connect=[{}, {"x": "y"}], name="onnx-pipeline")


def _compose_pipeline_ref(tmp: Path, inputs: Arrays) -> Arrays:
    hidden = _onnxruntime("first.onnx")(tmp, inputs)["y"]
    return _onnxruntime("second.onnx")(tmp, {"x": hidden})


def _compose_ensemble(tmp: Path) -> Model:
    from aimass import compose

    a = Model.load(models.onnx_mlp(tmp / "a.onnx"))
    b = Model.load(models.onnx_mlp(tmp / "b.onnx", hidden=16, seed=1))
    return compose.ensemble(a, b, method="weighted", weights=_ENSEMBLE_WEIGHTS, name="onnx-ensemble")


def _compose_ensemble_ref(tmp: Path, inputs: Arrays) -> Arrays:
    a = _onnxruntime("a.onnx")(tmp, inputs)["y"]
    b = _onnxruntime("b.onnx")(tmp, inputs)["y"]
    wa, wb = _ENSEMBLE_WEIGHTS
    return {"y": (wa * a + wb * b).astype(np.float32)}


# --- tensorrt (aimass/frameworks/tensorrt): an engine built from the ONNX MLP, on a CUDA GPU only ------


def _tensorrt_from_onnx(tmp: Path) -> Model:
    # Profile up to batch 32: the suite predicts batches of up to 23 rows.
    onnx_path = models.onnx_mlp(tmp / "mlp.onnx", hidden=32)
    return Model.load(onnx_path, backend="tensorrt", device="cuda", options={"batch": (1, 8, 32)})


CASES += [
    Case("compose-onnx-pipeline", _compose_pipeline, "onnxruntime", reference=_compose_pipeline_ref),
    Case("compose-onnx-ensemble", _compose_ensemble, "onnxruntime", reference=_compose_ensemble_ref),
    Case(
        "tensorrt-from-onnx",
        _tensorrt_from_onnx,
        "tensorrt",
        tolerance=1e-3,  # TensorRT picks its own kernels (TF32 on recent GPUs): 1e-3 as in its own tests
        marks=(pytest.mark.gpu,),
        # The raw framework here is onnxruntime on the ONNX file the engine was built from.
        reference=_onnxruntime("mlp.onnx"),
    ),
]


# --- python (aimass/python_model.py): a PythonModel that scales its rows by factors read from a file --
# and runs a nested ONNX MLP; the reference scales by hand and runs onnxruntime on the same file.

_SCALE = np.array([0.5, 2.0, -1.0, 3.0], dtype=np.float32)


def _python_scaled(tmp: Path) -> Model:
    from python_models import Scaled

    (tmp / "scale.txt").write_text(" ".join(map(str, _SCALE)))
    return Model.load(Scaled(), artifacts={"scale": tmp / "scale.txt", "mlp": models.onnx_mlp(tmp / "mlp.onnx")})


def _python_scaled_ref(tmp: Path, inputs: Arrays) -> Arrays:
    return _onnxruntime("mlp.onnx")(tmp, {"x": inputs["x"] * _SCALE})


CASES += [
    Case("python-scaled-onnx", _python_scaled, "onnxruntime", reference=_python_scaled_ref, trust_code=True),
]


# --- transformers (aimass/frameworks/transformers): tiny BERTs built from a config, a WordPiece -------
# tokenizer trained here; references tokenize with transformers and run the model's own forward.

_TEXT_CORPUS = [
    "you are wonderful and kind",
    "what a lovely day with friends",
    "thanks for your help, friend",
    "i hate you, you idiot",
    "you are stupid and ugly",
    "shut up, loser",
]


def text_tokenizer(corpus: list[str] | None = None, max_length: int = 64) -> Any:
    """A transformers fast tokenizer around a WordPiece vocabulary trained on ``corpus`` (no download)."""
    import transformers
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as tk_models

    tok = Tokenizer(tk_models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus or _TEXT_CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def tiny_bert(task: str, vocab_size: int, labels: tuple[str, ...] = ("friendly", "toxic"), seed: int = 0) -> Any:
    """A 2-layer, 32-wide BERT for ``task`` (``classify``, ``encode`` or ``tag``), random weights from ``seed``."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(seed)
    kind = {
        "classify": transformers.BertForSequenceClassification,
        "encode": transformers.BertModel,
        "tag": transformers.BertForTokenClassification,
    }[task]
    return kind(config).eval()


def _text_model(task: str) -> Callable[[Path], Model]:
    def build(tmp: Path) -> Model:
        tok = text_tokenizer()
        model = tiny_bert(task, len(tok))
        _keep(tmp, (model, tok))
        return Model.load(model, tokenizer=tok)

    return build


def _hf_directory(tmp: Path) -> Model:
    tok = text_tokenizer()
    model = tiny_bert("classify", len(tok), seed=1)
    model.save_pretrained(str(tmp / "hf"))
    tok.save_pretrained(str(tmp / "hf"))
    _keep(tmp, (model, tok))
    return Model.load(tmp / "hf")


def hf_reference(model: Any, tok: Any, texts: list[str]) -> Arrays:
    """What transformers itself answers: the task's outputs computed from the model's forward."""
    import torch

    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    if hasattr(out, "last_hidden_state"):
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        return {"embedding": torch.nn.functional.normalize(pooled, dim=1).numpy()}
    probs = torch.softmax(out.logits, dim=-1).numpy()
    names = model.config.id2label
    return {"label": np.array([names[int(i)] for i in probs.argmax(-1)], dtype=object), "probabilities": probs}


def _hf_ref(tmp: Path, inputs: Arrays) -> Arrays:
    model, tok = _NATIVE[tmp]
    texts = [v.decode() if isinstance(v, bytes) else str(v) for v in inputs["text"].tolist()]
    return hf_reference(model, tok, texts)


CASES += [
    Case("transformers-bert-classifier", _text_model("classify"), "transformers", reference=_hf_ref),
    Case("transformers-bert-encoder", _text_model("encode"), "transformers", reference=_hf_ref),
    Case("transformers-save-pretrained-dir", _hf_directory, "transformers", reference=_hf_ref),
]


# --- remote over gRPC (aimass/backends/remote_grpc.py): our gRPC server on a free local port, loaded -----
# back by grpc:// URL; the reference runs the served ONNX file with onnxruntime.


def _remote_grpc(tmp: Path, source: Path, options: dict[str, object]) -> Model:
    """Serve a local model over gRPC on its own loop thread (a real socket) and load it back by URL."""
    from aimass.server import create_app
    from aimass.server.grpc import BackgroundServer

    server = BackgroundServer(create_app({"m": Model.load(source)}))  # lives as long as the test session
    return Model.load(f"grpc://{server.target}/m", options=options)


CASES += [
    Case(
        "remote-grpc-onnx-raw",
        lambda tmp: _remote_grpc(tmp, models.onnx_mlp(tmp / "mlp.onnx"), {"raw": True}),
        "grpc",
        reference=_onnxruntime("mlp.onnx"),
    ),
    Case(
        "remote-grpc-two-inputs-typed",
        lambda tmp: _remote_grpc(tmp, models.onnx_two_inputs(tmp / "two.onnx"), {"raw": False}),
        "grpc",
        reference=_onnxruntime("two.onnx"),
    ),
]
