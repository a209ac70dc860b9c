"""Keras and SavedModel specifics beyond the conformance suite: call path, memory, names, signatures, errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import BackendNotFound, DeviceError, DType, Model, ModelLoadError, TensorSpec
from aimass.backends import detect
from aimass.frameworks.keras.backend import KerasBackend

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def keras_model() -> Any:
    return models.keras_mlp()


@pytest.fixture(scope="module")
def multi_signature_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel with two signatures and no serving_default; ``triple`` has an INT32 input."""
    return models.two_signature_savedmodel(tmp_path_factory.mktemp("multi") / "scaler")


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_keras_predict_equals_raw_call(keras_model: Any) -> None:
    m = Model.load(keras_model)
    assert m.backend_name == "keras"
    assert m.schema.inputs == [TensorSpec(name="x", dtype="FP32", shape=[-1, 4])]
    assert m.schema.outputs == [TensorSpec(name="logits", dtype="FP32", shape=[-1, 3])]
    for batch in (1, 32):
        x = models.dataset(batch, seed=batch)[0]
        raw = keras_model(x, training=False).numpy()
        np.testing.assert_allclose(m.predict(x)["logits"], raw, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_10000_calls_do_not_grow_rss_or_threads(keras_model: Any) -> None:
    m = Model.load(keras_model)
    x = models.dataset(4)[0]
    for _ in range(300):  # warm-up: TF allocates its pools and caches on the first calls
        m.predict(x)
    rss, threads = _rss_bytes(), threading.active_count()
    os_threads = len(list(Path("/proc/self/task").iterdir()))
    for _ in range(10_000):
        m.predict(x)
    grown = _rss_bytes() - rss
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10 000 calls"
    assert threading.active_count() == threads
    assert len(list(Path("/proc/self/task").iterdir())) <= os_threads + 2  # TF may lazily start a pool thread


def test_multi_input_functional_model_is_fed_by_name() -> None:
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    net = keras.Model([a, b], [keras.layers.Dense(1, name="sum")(joined), keras.layers.Dense(2, name="pair")(b)])
    m = Model.load(net)
    assert m.schema.input_names == ["a", "b"]
    assert m.schema.output_names == ["sum", "pair"]
    xa, xb = np.ones((3, 4), np.float32), np.arange(6, dtype=np.float32).reshape(3, 2)
    out = m.predict({"b": xb, "a": xa})
    raw = net([xa, xb], training=False)
    np.testing.assert_allclose(out["sum"], raw[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["pair"], raw[1].numpy(), rtol=1e-6)


def test_dict_input_model_uses_its_keys() -> None:
    q, p = keras.Input((3,), name="q"), keras.Input((4,), name="p")
    net = keras.Model({"q": q, "p": p}, keras.layers.Dense(1, name="y")(keras.layers.Concatenate()([q, p])))
    m = Model.load(net)
    assert m.schema.input_names == ["p", "q"]
    xq, xp = np.full((2, 3), 0.5, np.float32), np.full((2, 4), -1.0, np.float32)
    np.testing.assert_allclose(m.predict({"q": xq, "p": xp})["y"], net({"q": xq, "p": xp}).numpy(), rtol=1e-6)


def test_subclassed_model_needs_an_example_and_names_dict_outputs() -> None:
    class TwoHeads(keras.Model):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x: Any) -> dict[str, Any]:
            h = self.dense(x)
            return {"score": h, "best": keras.ops.argmax(h, axis=-1)}

    net = TwoHeads()
    with pytest.raises(ModelLoadError, match="subclassed.*example_input"):
        Model.load(net)
    x = models.dataset(5)[0]
    m = Model.load(net, example_input=x)
    assert m.schema.input_names == ["input"]
    assert [(t.name, t.dtype, t.shape) for t in m.schema.outputs] == [
        ("best", DType.INT32, [-1]),  # keras.ops.argmax returns int32
        ("score", DType.FP32, [-1, 3]),
    ]
    np.testing.assert_array_equal(m.predict(x)["best"], np.argmax(net(x)["score"].numpy(), axis=-1))


def test_keras_file_with_lambda_is_refused_unless_allowed(tmp_path: Path) -> None:
    inp = keras.Input((4,), name="x")
    net = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0, name="twice")(inp))
    net.save(str(tmp_path / "lambda.keras"))
    with pytest.raises(ModelLoadError, match=r"lambda\.keras.*allow_pickle"):
        Model.load(tmp_path / "lambda.keras")
    m = Model.load(tmp_path / "lambda.keras", options={"allow_pickle": True})
    np.testing.assert_array_equal(m.predict(np.ones((1, 4), np.float32))["twice"], np.full((1, 4), 2.0, np.float32))


def test_savedmodel_schema_comes_from_the_signature(keras_model: Any, tmp_path: Path) -> None:
    keras_model.export(str(tmp_path / "sm"), verbose=False)
    m = Model.load(tmp_path / "sm")
    assert m.backend_name == "tensorflow"
    assert m.backend.signature == "serving_default"  # type: ignore[attr-defined]  # keras export also writes 'serve'
    assert str(m.schema) == "(x: FP32 [-1, 4]) -> (output_0: FP32 [-1, 3])"
    x = models.dataset(6)[0]
    np.testing.assert_allclose(m.predict(x)["output_0"], keras_model(x).numpy(), rtol=1e-6, atol=1e-6)
    # Pointing at saved_model.pb or passing the loaded object gives the same model.
    assert Model.load(tmp_path / "sm" / "saved_model.pb").schema == m.schema
    assert Model.load(tf.saved_model.load(str(tmp_path / "sm"))).schema == m.schema


def test_savedmodel_signature_choice(multi_signature_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"signatures \['double', 'triple'\].*options=\{'signature'"):
        Model.load(multi_signature_dir)
    with pytest.raises(ModelLoadError, match=r"no signature 'quadruple'; signatures are \['double', 'triple'\]"):
        Model.load(multi_signature_dir, options={"signature": "quadruple"})
    m = Model.load(multi_signature_dir, options={"signature": "triple"})
    assert {t.name: (t.dtype, t.shape) for t in m.schema.inputs} == {
        "x": (DType.FP32, [-1, 2]),
        "n": (DType.INT32, [-1]),
    }
    out = m.predict({"x": np.eye(2, dtype=np.float32), "n": np.array([5, 7], np.int32)})
    np.testing.assert_array_equal(out["y"], np.array([[3.0, 6.0], [9.0, 12.0]], np.float32))
    np.testing.assert_array_equal(out["n2"], np.array([10, 14], np.int32))
    # The chosen signature is saved as serving_default, so the package reloads without options.
    again = Model.load(m.save(tmp_path / "pkg"))
    assert again.schema == m.schema
    np.testing.assert_array_equal(
        again.predict({"x": np.eye(2, dtype=np.float32), "n": np.array([5, 7]).astype(np.int32)})["y"], out["y"]
    )


def test_savedmodel_package_is_one_archive(keras_model: Any, tmp_path: Path) -> None:
    keras_model.export(str(tmp_path / "sm"), verbose=False)
    pkg = Model.load(tmp_path / "sm").save(tmp_path / "pkg")
    assert sorted(p.name for p in pkg.iterdir()) == ["aimass.json", "model.savedmodel.tar"]


def test_not_a_savedmodel_and_missing_signatures(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendNotFound, match="no backend recognises directory 'empty'"):
        Model.load(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="'empty' is not a SavedModel directory: it has no saved_model.pb"):
        Model.load(tmp_path / "empty", backend="tensorflow")
    with pytest.raises(ModelLoadError, match="has no serving signature"):
        Model.load(tf.Module(), backend="tensorflow")


def test_cuda_is_refused_without_a_gpu(keras_model: Any) -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    # Model.load checks CUDA for every backend first; the backend's own check covers direct use.
    with pytest.raises(DeviceError, match=r"device 'cuda': TensorFlow sees 0 GPU"):
        KerasBackend.load(keras_model, device="cuda")


def test_detection_imports_no_framework(tmp_path: Path) -> None:
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    code = f"""
import sys
from aimass.backends import detect
names = [detect(p).name for p in ("m.keras", "m.tflite", "m-symbol.json", {str(tmp_path / "sm")!r})]
loaded = [m for m in ("tensorflow", "keras", "mxnet", "ai_edge_litert") if m in sys.modules]
print(names, loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['keras', 'tflite', 'mxnet', 'tensorflow'] []"
    assert detect(tmp_path / "sm").name == "tensorflow"


def test_sequential_models_with_and_without_input_layer() -> None:
    with_input = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    called = keras.Sequential([keras.layers.Dense(3)])
    x = models.dataset(2)[0]
    called(x)  # builds it with a fixed batch of 2: the schema still leaves the batch dynamic
    for net in (with_input, called):
        m = Model.load(net)
        assert [t.shape for t in m.schema.inputs] == [[-1, 4]]
        x5 = models.dataset(5)[0]
        np.testing.assert_allclose(next(iter(m.predict(x5).values())), net(x5).numpy(), rtol=1e-6)


def test_missing_keras_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from aimass import BackendUnavailable

    monkeypatch.setitem(sys.modules, "keras", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match=r"keras backend needs keras: pip install 'aimass\[tensorflow\]'"):
        KerasBackend.load("model.keras")


def test_archive_members_must_stay_inside(tmp_path: Path) -> None:
    import io
    import tarfile

    with tarfile.open(tmp_path / "evil.savedmodel.tar", "w") as tar:
        info = tarfile.TarInfo("../outside.pb")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ModelLoadError, match=r"holds '\.\./outside\.pb', which is not a plain file inside"):
        Model.load(tmp_path / "evil.savedmodel.tar")
    assert not (tmp_path / "outside.pb").exists()
