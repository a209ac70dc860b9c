"""TFLite specifics beyond the conformance suite: agreement with Keras, threads, signatures, errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import DeviceError, Model, ModelLoadError, PredictionError
from aimass.frameworks.keras.tflite import TFLiteBackend
from aimass.testing import run_in_threads

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.tflite_mlp(tmp_path_factory.mktemp("tflite") / "mlp.tflite")


@pytest.fixture(scope="module")
def two_signature_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tflite with signatures ``double`` (x -> y) and ``triple`` (x, n -> y, n2) and no serving_default."""
    tmp = tmp_path_factory.mktemp("sig")
    models.two_signature_savedmodel(tmp / "sm")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp / "sm"), signature_keys=["double", "triple"])
    (tmp / "two.tflite").write_bytes(converter.convert())
    return tmp / "two.tflite"


def test_matches_the_keras_model(tflite_file: Path) -> None:
    m = Model.load(tflite_file)
    assert m.backend_name == "tflite"
    assert str(m.schema) == "(x: FP32 [-1, 4]) -> (output_0: FP32 [-1, 3])"
    keras_model = models.keras_mlp()
    for batch in (1, 9, 32):
        x = models.dataset(batch, seed=batch)[0]
        np.testing.assert_allclose(m.predict(x)["output_0"], keras_model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_threads_with_different_batch_sizes_get_their_own_interpreter(tflite_file: Path) -> None:
    # One shared interpreter would be resized by one thread while another reads its tensors.
    m = Model.load(tflite_file)
    batches = [models.dataset(n, seed=n)[0] for n in range(1, 9)]
    expected = [m.predict(b)["output_0"] for b in batches]
    interpreters: list[Any] = []  # kept alive, so that ids are not reused
    lock = threading.Lock()

    def worker(i: int) -> None:
        for _ in range(50):
            np.testing.assert_array_equal(m.predict(batches[i])["output_0"], expected[i])
        with lock:
            interpreters.append(m.backend._local.runner.interpreter)  # type: ignore[attr-defined]

    run_in_threads(worker, 8)
    assert len({id(i) for i in interpreters}) == 8


def test_signature_choice(two_signature_file: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"signatures \['double', 'triple'\] and none is 'serving_default'"):
        Model.load(two_signature_file)
    with pytest.raises(ModelLoadError, match=r"no signature 'half'; signatures are \['double', 'triple'\]"):
        Model.load(two_signature_file, options={"signature": "half"})
    m = Model.load(two_signature_file, options={"signature": "triple"})
    assert str(m.schema) == "(n: INT32 [-1], x: FP32 [-1, 2]) -> (n2: INT32 [-1], y: FP32 [-1, 2])"
    out = m.predict({"x": np.eye(2, dtype=np.float32), "n": np.array([5, 7], np.int32)})
    np.testing.assert_array_equal(out["y"], np.array([[3.0, 6.0], [9.0, 12.0]], np.float32))
    np.testing.assert_array_equal(out["n2"], np.array([10, 14], np.int32))
    # 'double' is the first subgraph (run without the signature runner), 'triple' is not.
    double = Model.load(two_signature_file, options={"signature": "double"})
    np.testing.assert_array_equal(double.predict(np.eye(2, dtype=np.float32))["y"], out["y"] / 1.5)
    assert double.backend._local.runner._runner is None  # type: ignore[attr-defined]
    assert m.backend._local.runner._runner is not None  # type: ignore[attr-defined]


def test_file_without_signatures_runs_subgraph_zero(tflite_file: Path, tmp_path: Path) -> None:
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model(str(tflite_file))
    flat.signatureDefs = []
    flatbuffer_utils.write_model(flat, str(tmp_path / "bare.tflite"))
    m = Model.load(tmp_path / "bare.tflite")
    assert m.backend.signature is None  # type: ignore[attr-defined]
    (out_name,) = m.schema.output_names
    assert m.schema.inputs[0].shape == [-1, 4]
    with_sig = Model.load(tflite_file)
    for batch in (3, 1, 3, 16):  # resized whenever the batch changes
        x = models.dataset(batch, seed=batch)[0]
        np.testing.assert_array_equal(m.predict(x)[out_name], with_sig.predict(x)["output_0"])


def test_bad_file_and_device_errors(tmp_path: Path, tflite_file: Path) -> None:
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelLoadError, match="LiteRT could not load the model"):
        Model.load(tmp_path / "junk.tflite")
    with pytest.raises(DeviceError, match="tflite backend runs on the CPU only"):
        TFLiteBackend.load(tflite_file, device="cuda")


def test_schema_override_that_the_model_cannot_run_is_a_prediction_error(tflite_file: Path) -> None:
    from aimass import Schema, TensorSpec

    wrong = Schema(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 5])],
        outputs=[TensorSpec(name="output_0", dtype="FP32", shape=[-1, 3])],
    )
    m = Model.load(tflite_file, schema=wrong)
    with pytest.raises(PredictionError, match="LiteRT failed"):
        m.predict(np.zeros((2, 5), np.float32))


def test_missing_litert_names_the_extra(tflite_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aimass import BackendUnavailable

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if not installed
    with pytest.raises(
        BackendUnavailable, match=r"tflite backend needs ai-edge-litert: pip install 'aimass\[tensorflow\]'"
    ):
        Model.load(tflite_file)
