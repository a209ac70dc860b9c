"""PythonModel on the python backend: strings in and out, packages with code and the trust they need,
serving through the dynamic batcher, remote calls, stock tritonclient, composition and the library."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
import serving
import text_features
from python_models import Scaled, TextScorer

from aimass import Model, compose
from aimass.backends.remote import mount, unmount
from aimass.cli.options import ServerOptions
from aimass.errors import IntegrityError, PredictionError, SchemaError, UnsupportedOperation, UntrustedCode
from aimass.package import read_manifest
from aimass.python_model import PythonBackend, PythonModel
from aimass.schema import Schema, TensorSpec
from aimass.server import create_app
from aimass.store import Store

LABELS = ["calm", "angry", "joyful"]
# Distinct sentences: each caller must get back the answer to its own.
SENTENCES = [
    f"{'Sentence' if i % 2 else 'LINE'} number {i}{'!' * (i % 4)} is {'LOUD' if i % 3 == 0 else 'quiet'} café"
    + " x" * (i % 7)
    for i in range(48)
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("python-model")


@pytest.fixture(scope="module")
def scorer(tmp: Path) -> Model:
    (tmp / "labels.txt").write_text("\n".join(LABELS), encoding="utf-8")
    mlp = models.onnx_mlp(tmp / "mlp.onnx", seed=3)
    return Model.load(TextScorer(), artifacts={"labels": tmp / "labels.txt", "mlp": mlp}, name="scorer")


@pytest.fixture(scope="module")
def package(scorer: Model, tmp: Path) -> Path:
    return scorer.save(tmp / "scorer-pkg")


def _expected(tmp: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """The answer computed by hand: the features, onnxruntime on the MLP file, softmax, argmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp / "mlp.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["y"], {"x": text_features.features(texts)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return [LABELS[i] for i in p.argmax(axis=1)], p


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype == object:
            assert a[k].tolist() == b[k].tolist(), k
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)


# -- local ---------------------------------------------------------------------------------------------


def test_strings_in_str_labels_out(scorer: Model, tmp: Path) -> None:
    texts = SENTENCES[:6]
    out = scorer.predict(texts)
    assert str(scorer.schema) == (
        "(text: BYTES [-1]) -> (label: BYTES [-1], probabilities: FP32 [-1, 3], normalized: BYTES [-1])"
    )
    labels, probabilities = _expected(tmp, texts)
    assert out["label"].dtype == object and out["label"].tolist() == labels
    assert all(type(v) is str for v in out["label"])
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5)
    assert out["normalized"].tolist() == [t.lower() for t in texts]
    assert len(set(map(tuple, out["probabilities"].round(6)))) == len(texts)  # distinct rows: a real signal
    # A numpy array of str, of bytes, an object array: the same BYTES tensor, the same answer.
    for same in (np.array(texts), np.array([t.encode() for t in texts], dtype=object), {"text": texts}):
        _assert_same(scorer.predict(same), out)


def test_predict_batch_equals_predict(scorer: Model) -> None:
    _assert_same(scorer.predict_batch(SENTENCES, batch_size=7, progress=False), scorer.predict(SENTENCES))


def test_numbers_and_invalid_utf8_are_refused(scorer: Model) -> None:
    with pytest.raises(SchemaError, match=r"input 'text': expected BYTES .*numbers are not BYTES"):
        scorer.predict(np.array([1.0, 2.0]))
    with pytest.raises(SchemaError, match=r"input 'text': .*BYTES elements must be str or bytes, got int"):
        scorer.predict([3, 4])
    with pytest.raises(SchemaError, match=r"input 'text': element 1 is not UTF-8 text \(byte 0xff") as info:
        scorer.predict(["fine", b"\xff\xfe broken"])
    assert info.value.tensor == "text"


def test_user_code_errors_are_prediction_errors(tmp: Path) -> None:
    class Broken(PythonModel):
        schema = Schema(
            inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1])], outputs=[TensorSpec(name="y", dtype="FP32")]
        )

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"z": inputs["x"]}

    with pytest.raises(PredictionError, match=r"python model .*Broken: predict returned no 'y'; it returned \['z'\]"):
        Model.load(Broken()).predict([1.0])
    with pytest.raises(UnsupportedOperation, match="defined inside a function"):
        Model.load(Broken()).save(tmp / "never")
    assert not (tmp / "never").exists()


# -- packages and trust ------------------------------------------------------------------------------------


def test_package_holds_code_artifacts_and_a_nested_onnx_package(package: Path, scorer: Model) -> None:
    names = {a.path for a in read_manifest(package).artifacts}  # every file is checksummed
    assert {"python.json", "code/python_models.py", "code/text_features.py", "artifacts/labels/labels.txt"} <= names
    assert {"artifacts/mlp/aimass.json", "artifacts/mlp/model.onnx"} <= names
    assert read_manifest(package / "artifacts" / "mlp").backend == "onnx"
    assert not [p for p in package.rglob("*") if p.suffix in (".pkl", ".pickle")]
    loaded = Model.load(package, trust_code=True)
    assert loaded.backend_name == "python" and loaded.schema == scorer.schema
    # The nested encoder runs on its own backend: onnxruntime, not Python.
    assert PythonBackend.of(loaded).artifacts["mlp"].backend_name == "onnx"  # type: ignore[union-attr]
    _assert_same(loaded.predict(SENTENCES), scorer.predict(SENTENCES))


def test_package_with_code_is_refused_without_trust(package: Path) -> None:
    with pytest.raises(UntrustedCode) as info:
        Model.load(package)
    message = str(info.value)
    assert "code/python_models.py" in message and "code/text_features.py" in message
    assert "trust_code=True" in message and "--trust-code" in message
    assert sorted(info.value.files) == ["code/python_models.py", "code/text_features.py"]
    assert info.value.status_code == 403


def test_code_does_not_run_until_trusted(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp / "ran.txt"
    source = tmp / "src" / "marked_model.py"
    source.parent.mkdir()
    source.write_text(
        textwrap.dedent(
            """
            import os
            from pathlib import Path
            from aimass import PythonModel

            with Path(os.environ["MARKER"]).open("a") as f:  # runs whenever the module is imported
                f.write("imported\\n")


            class Marked(PythonModel):
                schema = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1]}],
                          "outputs": [{"name": "y", "dtype": "FP32", "shape": [-1]}]}

                def predict(self, inputs):
                    return {"y": inputs["x"] + 1}
            """
        )
    )
    monkeypatch.setenv("MARKER", str(marker))
    monkeypatch.syspath_prepend(str(source.parent))
    from marked_model import Marked  # type: ignore[import-not-found]

    path = Model.load(Marked()).save(tmp / "marked")
    assert marker.read_text() == "imported\n"
    with pytest.raises(UntrustedCode, match="code/marked_model.py"):
        Model.load(path)
    assert marker.read_text() == "imported\n"  # refused before importing anything
    assert Model.load(path, trust_code=True).predict([1.0])["y"].tolist() == [2.0]
    assert marker.read_text() == "imported\nimported\n"  # the package's own copy ran, once trusted


def test_extra_code_of_the_same_name_stays_with_its_package(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two packages whose extra code file is "helper.py", with different contents: each must run its own.
    import sys

    paths = {}
    for tag, step in (("a", 1), ("b", 2)):
        src = tmp / f"src-{tag}"
        src.mkdir()
        (src / "helper.py").write_text(f"STEP = {step}.0\n")
        (src / f"{tag}_model.py").write_text(
            textwrap.dedent(
                """
                import helper
                from aimass import PythonModel


                class Stepper(PythonModel):
                    schema = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1]}],
                              "outputs": [{"name": "y", "dtype": "FP32", "shape": [-1]}]}
                    code = ("helper.py",)

                    def predict(self, inputs):
                        return {"y": inputs["x"] + helper.STEP}
                """
            )
        )
        monkeypatch.syspath_prepend(str(src))
        monkeypatch.delitem(sys.modules, "helper", raising=False)
        module = __import__(f"{tag}_model")
        paths[tag] = Model.load(module.Stepper()).save(tmp / f"stepper-{tag}")
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    a, b = (Model.load(paths[t], trust_code=True) for t in "ab")
    assert a.predict([1.0])["y"].tolist() == [2.0]
    assert b.predict([1.0])["y"].tolist() == [3.0]
    assert "helper" not in sys.modules  # nothing left under the plain name for the next package


def test_tampered_code_file_is_refused(package: Path, tmp: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(package, tmp / "tampered"))
    code = copy / "code" / "python_models.py"
    code.write_text(code.read_text().replace("t.lower()", "t.upper()"))  # same size, other behaviour
    with pytest.raises(IntegrityError, match=r"artifact 'code/python_models.py' fails its checksum"):
        Model.load(copy, trust_code=True)


@pytest.mark.parametrize("planted", ["__pycache__/python_models.cpython-311.pyc", "csv.py"])
def test_unchecksummed_files_beside_the_code_are_refused(
    package: Path, tmp: Path, planted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # code/ is on sys.path while the module loads, and a .pyc runs in place of its source.
    import shutil
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as without PYTHONDONTWRITEBYTECODE

    copy = Path(shutil.copytree(package, tmp / f"planted-{planted.replace('/', '-')}"))
    Model.load(copy, trust_code=True)
    assert not (copy / "code" / "__pycache__").exists()  # loading writes nothing into the package
    (copy / "code" / planted).parent.mkdir(exist_ok=True)
    (copy / "code" / planted).write_bytes(b"raise SystemExit('never runs')\n")
    with pytest.raises(IntegrityError, match=f"'code/{planted}' is not covered by the package's checksums"):
        Model.load(copy, trust_code=True)


def test_spec_cannot_reach_files_outside_the_checksums(package: Path, tmp: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(package, tmp / "unlisted"))
    (copy / "code" / "extra.py").write_text("raise SystemExit('never runs')\n")
    spec = json.loads((copy / "python.json").read_text())
    spec["files"].append("code/extra.py")
    (copy / "python.json").write_text(json.dumps(spec))
    with pytest.raises(IntegrityError):  # python.json itself is checksummed
        Model.load(copy, trust_code=True)
    with pytest.raises(IntegrityError, match="not covered by the package's checksums"):
        PythonBackend.load(copy / "python.json", options={"trust_code": True})  # a loose spec: nothing is covered


def test_directory_artifacts_and_extra_files_round_trip(tmp: Path) -> None:
    lexicon = tmp / "lexicon"
    (lexicon / "nested").mkdir(parents=True)
    (lexicon / "nested" / "words.txt").write_text("a b c")
    (tmp / "scale.txt").write_text("1 2 3 4")
    m = Model.load(
        Scaled(), artifacts={"scale": tmp / "scale.txt", "mlp": models.onnx_mlp(tmp / "m2.onnx"), "lexicon": lexicon}
    )
    loaded = Model.load(m.save(tmp / "scaled-pkg"), trust_code=True)
    kept = PythonBackend.of(loaded).artifacts["lexicon"]
    assert isinstance(kept, Path) and (kept / "nested" / "words.txt").read_text() == "a b c"
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    _assert_same(loaded.predict(x), m.predict(x))


# -- composition and the library -------------------------------------------------------------------------------


def test_ensemble_with_an_onnx_model_saves_and_needs_trust(tmp: Path) -> None:
    (tmp / "scale2.txt").write_text("0.5 0.5 2 2")
    onnx_path = models.onnx_mlp(tmp / "plain.onnx", seed=5)
    python = Model.load(Scaled(), artifacts={"scale": tmp / "scale2.txt", "mlp": models.onnx_mlp(tmp / "in.onnx")})
    plain = Model.load(onnx_path)
    both = compose.ensemble(python, plain, method="mean")
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    want = (python.predict(x)["y"] + plain.predict(x)["y"]) / 2
    np.testing.assert_allclose(both.predict(x)["y"], want, rtol=1e-6)
    path = both.save(tmp / "ensemble")
    with pytest.raises(UntrustedCode, match="parts/0/code/python_models.py"):
        Model.load(path)
    np.testing.assert_allclose(Model.load(path, trust_code=True).predict(x)["y"], want, rtol=1e-6)


def test_publish_and_load_from_the_library(scorer: Model, tmp: Path) -> None:
    lib = Store(tmp / "library")
    version = lib.publish(scorer, "scorer")
    with pytest.raises(UntrustedCode):
        lib.load("scorer", version)
    _assert_same(lib.load("scorer", version, trust_code=True).predict(SENTENCES[:3]), scorer.predict(SENTENCES[:3]))


def test_configuration_opts_in_through_backend_options(package: Path, scorer: Model) -> None:
    from aimass.config import ModelConfig

    with pytest.raises(UntrustedCode):
        ModelConfig(uri=str(package)).load("scorer")
    # aimass.toml: [models.scorer.options] trust_code = true
    loaded = ModelConfig(uri=str(package), options={"trust_code": True}).load("scorer")
    _assert_same(loaded.predict(SENTENCES[:2]), scorer.predict(SENTENCES[:2]))


# -- serving ---------------------------------------------------------------------------------------------------


def test_serve_options_carry_trust_code(package: Path) -> None:
    assert ServerOptions(trust_code=True).model_options() == {"trust_code": True}
    assert ServerOptions(option=["x=1"], trust_code=True).model_options() == {"x": 1, "trust_code": True}
    assert ServerOptions().model_options() is None
    app = create_app({"scorer": package}, model_options=ServerOptions(trust_code=True).model_options(), warmup=False)
    assert [m.name for m in app.repository.loaded()] == ["scorer"]


@pytest.fixture(scope="module")
def served(scorer: Model) -> Iterator[tuple[str, object]]:
    # A long queue delay makes concurrent requests merge reliably.
    app = create_app({"scorer": scorer}, max_batch_size=16, max_queue_delay=0.02)
    base = "http://python-model.test"
    mount(base, app)
    yield base, app
    unmount(base)


def _request(app: object, method: str, url: str, **kwargs: object) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:  # type: ignore[arg-type]
            return await c.request(method, url, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(send())


def _batch_counts(app: object) -> dict[str, float]:
    return {
        ln.split("{")[0]: float(ln.rsplit(" ", 1)[1])
        for ln in _request(app, "GET", "/metrics").text.splitlines()
        if ln.startswith(("aimass_batch_size_count", "aimass_batch_size_sum")) and 'model="scorer"' in ln
    }


def test_remote_answers_equal_local_through_the_batcher(served: tuple[str, object], scorer: Model) -> None:
    base, app = served
    remote = Model.load(f"{base}/v2/models/scorer")
    assert remote.schema == scorer.schema
    as_json = Model.load(f"{base}/v2/models/scorer", options={"binary_threshold": None})
    _assert_same(remote.predict(SENTENCES[:4]), scorer.predict(SENTENCES[:4]))  # binary BYTES
    _assert_same(as_json.predict(SENTENCES[:4]), scorer.predict(SENTENCES[:4]))  # JSON strings
    before = _batch_counts(app)

    async def each() -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(*(remote.apredict([s]) for s in SENTENCES)))

    answers = asyncio.run(each())
    for sentence, got in zip(SENTENCES, answers, strict=True):
        assert got["normalized"].tolist() == [sentence.lower()]  # its own row, not a neighbour's
        _assert_same(got, scorer.predict([sentence]))
    after = _batch_counts(app)
    assert after["aimass_batch_size_sum"] - before["aimass_batch_size_sum"] == len(SENTENCES)
    assert after["aimass_batch_size_count"] - before["aimass_batch_size_count"] < len(SENTENCES) / 2, (before, after)


def test_server_answers_400_for_bad_text_and_keeps_serving(served: tuple[str, object], scorer: Model) -> None:
    base, app = served
    remote = Model.load(f"{base}/v2/models/scorer")
    with pytest.raises(SchemaError, match=r"element 0 is not UTF-8 text"):
        remote.predict([b"\xc3\x28"])
    numbers = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.5]}]}
    r = _request(app, "POST", "/v2/models/scorer/infer", json=numbers)
    assert r.status_code == 400 and "text" in r.json()["error"], r.text
    _assert_same(remote.predict(SENTENCES[:2]), scorer.predict(SENTENCES[:2]))


def test_stock_tritonclient_json_and_binary(scorer: Model) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    app = create_app({"scorer": scorer}, max_batch_size=16)
    texts = SENTENCES[:5]
    want = scorer.predict(texts)
    with serving.live_server(app) as address:
        client = httpclient.InferenceServerClient(url=address)
        for binary in (False, True):
            arr = np.array([t.encode() for t in texts], dtype=np.object_)
            given = httpclient.InferInput("text", [len(texts)], "BYTES")
            given.set_data_from_numpy(arr, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in scorer.schema.output_names]
            result = client.infer("scorer", [given], outputs=outputs)
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
            assert labels == want["label"].tolist(), binary
            np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
        client.close()
