"""Hugging Face text models with no code: each task against transformers itself, packages, ONNX, int8, bad input.

The models are tiny BERTs built from a config with a WordPiece tokenizer trained on a few sentences
(tests/backends/cases.py), so nothing is downloaded; references run the transformers model's own
forward on the transformers tokenizer's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cases import hf_reference, text_tokenizer, tiny_bert

from aimass import Model
from aimass.errors import ModelLoadError, SchemaError

pytest.importorskip("transformers")

POSTS = [
    "you are wonderful and kind",
    "i hate you, you idiot",
    "thanks for your help",
    "shut up loser, what a stupid day",
    "",
    "unseen words: zebra quantum café 🙂",
]


@pytest.fixture(scope="module")
def tok() -> Any:
    return text_tokenizer()


@pytest.fixture(scope="module")
def classifier(tok: Any) -> tuple[Any, Model]:
    net = tiny_bert("classify", len(tok), seed=3)
    return net, Model.load(net, tokenizer=tok)


@pytest.fixture(scope="module")
def onnx_classifier(classifier: tuple[Any, Model]) -> Model:
    return classifier[1].convert("onnx", data=POSTS, repeats=0)


def test_classifier_answers_what_transformers_answers(tok: Any, classifier: tuple[Any, Model]) -> None:
    net, m = classifier
    assert str(m.schema) == "(text: BYTES [-1]) -> (label: BYTES [-1], probabilities: FP32 [-1, 2])"
    got = m.predict(POSTS)
    want = hf_reference(net, tok, POSTS)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    assert got["label"].tolist() == want["label"].tolist()
    assert set(got["label"].tolist()) <= {"friendly", "toxic"}
    # bytes, numpy str arrays and a dict all read as the same texts
    as_bytes = m.predict({"text": [p.encode() for p in POSTS]})
    np.testing.assert_array_equal(as_bytes["probabilities"], got["probabilities"])
    np.testing.assert_array_equal(m.predict(np.array(POSTS))["label"], got["label"])


def test_feature_extraction_is_mean_pooled_and_normalised(tok: Any) -> None:
    net = tiny_bert("encode", len(tok), seed=4)
    m = Model.load(net, tokenizer=tok)
    emb = m.predict(POSTS)["embedding"]
    assert emb.shape == (len(POSTS), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, hf_reference(net, tok, POSTS)["embedding"], atol=1e-5)
    # padding must not leak into the mean: a text embeds the same alone and beside a longer one
    np.testing.assert_allclose(m.predict(POSTS[2:3])["embedding"][0], emb[2], atol=1e-5)


def test_token_classification_labels_each_token(tok: Any) -> None:
    import torch

    tags = ("O", "B-INSULT", "I-INSULT")
    net = tiny_bert("tag", len(tok), labels=tags, seed=5)
    m = Model.load(net, tokenizer=tok)
    out = m.predict(POSTS[:4])
    for i, text in enumerate(POSTS[:4]):
        enc = tok([text], return_tensors="pt")
        with torch.inference_mode():
            best = net(**enc).logits[0].argmax(-1).tolist()
        tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])[1:-1]  # [CLS] ... [SEP]
        n = len(tokens)
        assert out["tokens"][i, :n].tolist() == tokens
        assert out["labels"][i, :n].tolist() == [tags[k] for k in best[1:-1]]
        assert out["labels"][i, n:].tolist() == [""] * (out["labels"].shape[1] - n)


def test_options_max_length_truncation_padding(tok: Any, classifier: tuple[Any, Model]) -> None:
    import torch

    net, m = classifier
    long_text = " ".join(["you are wonderful and kind"] * 30)
    short = Model.load(net, tokenizer=tok, options={"max_length": 8})
    enc = tok([long_text], truncation=True, max_length=8, return_tensors="pt")
    with torch.inference_mode():
        want = torch.softmax(net(**enc).logits, -1).numpy()
    np.testing.assert_allclose(short.predict([long_text])["probabilities"], want, atol=1e-5)
    padded = Model.load(net, tokenizer=tok, options={"padding": "max_length", "max_length": 32})
    np.testing.assert_allclose(padded.predict(POSTS)["probabilities"], m.predict(POSTS)["probabilities"], atol=1e-5)
    with pytest.raises(ModelLoadError, match="padding='left'"):
        Model.load(net, tokenizer=tok, options={"padding": "left"})
    # Without truncation, a text longer than the model's 64 positions is a typed input error, not a crash.
    untruncated = Model.load(net, tokenizer=tok, options={"truncation": False})
    with pytest.raises(SchemaError, match=r"input 'text': element 1 has \d+ tokens, more than max_length 64"):
        untruncated.predict(["short", long_text])
    assert untruncated.predict(POSTS)["label"].tolist() == m.predict(POSTS)["label"].tolist()


def test_save_pretrained_directory_and_package_hold_data_only(
    tmp_path: Path, tok: Any, classifier: tuple[Any, Model]
) -> None:
    net, m = classifier
    net.save_pretrained(str(tmp_path / "hf"))
    tok.save_pretrained(str(tmp_path / "hf"))
    from_dir = Model.load(tmp_path / "hf")
    assert from_dir.backend_name == "transformers"
    np.testing.assert_allclose(from_dir.predict(POSTS)["probabilities"], m.predict(POSTS)["probabilities"], atol=1e-6)

    pkg = m.save(tmp_path / "pkg")
    files = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    assert files == [
        "aimass.json",
        "network/config.json",
        "network/model.safetensors",
        "pipeline.json",
        "tokenizer.json",
    ]
    loaded = Model.load(pkg)
    np.testing.assert_array_equal(loaded.predict(POSTS)["probabilities"], m.predict(POSTS)["probabilities"])
    assert loaded.predict(POSTS)["label"].tolist() == m.predict(POSTS)["label"].tolist()


def test_directories_that_would_run_code_or_unpickle_are_refused(tmp_path: Path, tok: Any) -> None:
    import torch

    net = tiny_bert("classify", len(tok))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    net.config.save_pretrained(str(pickled))
    tok.save_pretrained(str(pickled))
    torch.save(net.state_dict(), str(pickled / "pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        Model.load(pickled)

    remote_code = tmp_path / "remote-code"
    net.save_pretrained(str(remote_code))
    tok.save_pretrained(str(remote_code))
    config = json.loads((remote_code / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (remote_code / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="never runs code"):
        Model.load(remote_code)


def test_missing_or_slow_tokenizer_is_a_typed_error(tok: Any) -> None:
    net = tiny_bert("classify", len(tok))
    with pytest.raises(ModelLoadError, match="needs its tokenizer"):
        Model.load(net)
    with pytest.raises(ModelLoadError, match="is not a transformers model"):
        Model.load(tok)
    with pytest.raises(ModelLoadError, match="not a fast tokenizer"):
        Model.load(net, tokenizer=object())
    with pytest.raises(ModelLoadError, match="ForMaskedLM is none of these"):
        import transformers

        Model.load(transformers.BertForMaskedLM(net.config), tokenizer=tok)


def test_numbers_and_invalid_utf8_are_schema_errors(classifier: tuple[Any, Model]) -> None:
    _, m = classifier
    with pytest.raises(SchemaError, match="input 'text'.*numbers") as info:
        m.predict(np.array([1.0, 2.0]))
    assert info.value.tensor == "text"
    with pytest.raises(SchemaError, match="input 'text'"):
        m.predict([1, 2])
    with pytest.raises(SchemaError, match="input 'text'.*not UTF-8") as info:
        m.predict([b"fine", b"\xff\xfe broken"])
    assert info.value.tensor == "text"
    assert m.predict([])["probabilities"].shape == (0, 2)


def test_onnx_keeps_text_in_labels_out(tmp_path: Path, classifier: tuple[Any, Model], onnx_classifier: Model) -> None:
    _, m = classifier
    o = onnx_classifier
    assert o.schema == m.schema and o.backend.network.name == "onnx"
    assert o.report.max_abs_error < 1e-4
    np.testing.assert_allclose(o.predict(POSTS)["probabilities"], m.predict(POSTS)["probabilities"], atol=1e-5)
    assert o.predict(POSTS)["label"].tolist() == m.predict(POSTS)["label"].tolist()
    pkg = o.save(tmp_path / "onnx-pkg")
    assert (pkg / "network" / "model.onnx").is_file() and not (pkg / "network" / "model.safetensors").exists()
    # Options other than the text ones reach the network's backend (as `aimass serve --option` passes them).
    one = Model.load(pkg, options={"session_options": {"intra_op_num_threads": 1}, "max_length": 16})
    assert one.backend.network.session.get_session_options().intra_op_num_threads == 1
    assert one.backend.encoder.max_length == 16
    # The exported package serves with tokenizers + onnxruntime alone: neither torch nor transformers loads.
    code = (
        "import json, sys; from aimass import Model; "
        f"out = Model.load({str(pkg)!r}).predict(['you are kind', 'shut up']); "
        "print(json.dumps([out['label'].tolist(), out['probabilities'].tolist()])); "
        "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules))"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[-1] == "[]"
    labels, probs = json.loads(lines[-2])
    want = o.predict(["you are kind", "shut up"])
    assert labels == want["label"].tolist()
    np.testing.assert_allclose(probs, want["probabilities"], atol=1e-6)
    with pytest.raises(Exception, match="already runs on the onnx backend"):
        o.convert("onnx")


def test_int8_on_the_onnx_text_model(tmp_path: Path, classifier: tuple[Any, Model], onnx_classifier: Model) -> None:
    _, m = classifier
    q = onnx_classifier.compress("int8", data=POSTS, repeats=0)
    assert q.schema == m.schema and q.backend.network.name == "onnx"
    assert q.report.size_after < q.report.size_before
    label_drift = next(d for d in q.report.drift if d.output == "label")
    assert label_drift.top1_agreement is not None
    probs, ref = q.predict(POSTS)["probabilities"], m.predict(POSTS)["probabilities"]
    np.testing.assert_allclose(probs, ref, atol=0.05)
    assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.8
    loaded = Model.load(q.save(tmp_path / "int8"))
    np.testing.assert_array_equal(loaded.predict(POSTS)["probabilities"], probs)


def test_import_aimass_and_detection_import_no_transformers(tmp_path: Path) -> None:
    code = (
        "import sys, aimass; from aimass.backends import detect\n"
        "from aimass.errors import BackendNotFound\n"
        "try:\n    detect(sys.argv[1])\nexcept BackendNotFound:\n    pass\n"
        "print(sorted(k for k in ('torch', 'transformers', 'tokenizers') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_package_naming_files_outside_itself_is_refused(tmp_path: Path, onnx_classifier: Model) -> None:
    from aimass.errors import IntegrityError
    from aimass.package import MANIFEST, sha256_file

    pkg = onnx_classifier.save(tmp_path / "pkg")
    spec = json.loads((pkg / "pipeline.json").read_text())
    spec["network"]["files"] = ["../../outside.onnx"]
    (pkg / "pipeline.json").write_text(json.dumps(spec))
    # A package crafted that way has consistent checksums: the manifest is rewritten to match.
    manifest = json.loads((pkg / MANIFEST).read_text())
    for art in manifest["artifacts"]:
        if art["path"] == "pipeline.json":
            art["sha256"], art["size"] = sha256_file(pkg / "pipeline.json"), (pkg / "pipeline.json").stat().st_size
    (pkg / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="leaves the package directory"):
        Model.load(pkg)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "one"),
        ("network", []),
        ("network.files", []),
        ("network.format", "pickle"),
        ("tokenizer.evil", 1),
        ("tokenizer.max_length", "long"),
        ("labels", 3),
    ],
)
def test_malformed_pipeline_description_is_a_typed_error(
    tmp_path: Path, onnx_classifier: Model, field: str, value: Any
) -> None:
    from aimass.package import MANIFEST, sha256_file

    pkg = onnx_classifier.save(tmp_path / "pkg")
    spec = json.loads((pkg / "pipeline.json").read_text())
    *parents, key = field.split(".")
    target = spec
    for part in parents:
        target = target[part]
    target[key] = value
    (pkg / "pipeline.json").write_text(json.dumps(spec))
    manifest = json.loads((pkg / MANIFEST).read_text())
    for art in manifest["artifacts"]:
        if art["path"] == "pipeline.json":
            art["sha256"], art["size"] = sha256_file(pkg / "pipeline.json"), (pkg / "pipeline.json").stat().st_size
    (pkg / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=f"pipeline.json in 'pkg' is not a text pipeline description.*{key}"):
        Model.load(pkg)
