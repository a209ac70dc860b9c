"""SavedModels are programs: file, Python and checkpoint ops outside the saver are refused before TF loads them.

Also: a TFLite file with Select-TF (Flex) ops is a typed load error naming the file and the ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model, ModelLoadError
from aimass.errors import UnsafeProgram

tf = pytest.importorskip("tensorflow")
saved_model_pb2 = pytest.importorskip("tensorflow.core.protobuf.saved_model_pb2")


def _save(module: Any, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def _writer(directory: Path, target: Path) -> Path:
    """A SavedModel whose serving function writes ``target`` (what a hostile package does at warm-up)."""

    class Writer(tf.Module):  # type: ignore[name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            with tf.control_dependencies([tf.io.write_file(str(target), "owned")]):
                return {"y": tf.identity(x * 2.0)}

    return _save(Writer(), directory)


def _reader(directory: Path, secret: Path) -> Path:
    """A SavedModel whose serving function returns the contents of ``secret`` to the caller."""

    class Reader(tf.Module):  # type: ignore[name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": x * 2.0, "leak": tf.fill(tf.shape(x)[:1], tf.io.read_file(str(secret)))}

    return _save(Reader(), directory)


def _refusal(source: Path, op: str, shown: str) -> UnsafeProgram:
    with pytest.raises(UnsafeProgram) as caught:
        Model.load(source)
    assert op in caught.value.operators
    message = str(caught.value)
    assert message.startswith(f"{shown}: this SavedModel is a program") and op in message
    assert str(source.parent) not in message  # the client-visible text holds no absolute path
    return caught.value


def test_a_serving_function_that_writes_a_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    sm = _writer(tmp_path / "writer", target)
    _refusal(sm, "WriteFile", "writer/saved_model.pb")
    _refusal(sm / "saved_model.pb", "WriteFile", "writer/saved_model.pb")
    assert not target.exists()
    # As a package (the archive aimass writes): refused the same way, before TensorFlow loads it.
    trusted = Model.load(sm, trust_code=True)
    assert not target.exists()  # loading does not run the signature; predicting does
    pkg = trusted.save(tmp_path / "pkg")
    _refusal(pkg, "WriteFile", "model.savedmodel.tar/saved_model.pb")
    # With trust it loads and runs: the refusal above was about a real program.
    out = Model.load(pkg, trust_code=True).predict(np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(out["y"], np.full((1, 2), 2.0, np.float32))
    assert target.read_text() == "owned"


def test_a_serving_function_that_reads_a_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("DB_PASSWORD=hunter2")
    sm = _reader(tmp_path / "reader", secret)
    refused = _refusal(sm, "ReadFile", "reader/saved_model.pb")
    assert "hunter2" not in str(refused)
    out = Model.load(sm, trust_code=True).predict(np.ones((1, 2), np.float32))
    assert out["leak"].tolist() == ["DB_PASSWORD=hunter2"]


def test_python_calls_are_refused(tmp_path: Path) -> None:
    class Hook(tf.Module):  # type: ignore[name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": tf.py_function(lambda t: t * 2.0, [x], tf.float32)}

    _refusal(_save(Hook(), tmp_path / "hook"), "EagerPyFunc", "hook/saved_model.pb")


def _edit_restore_function(sm: Path, edit: Any) -> None:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sm / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    (restore,) = [f for f in graph.library.function if f.signature.name.startswith("__inference__traced_restore")]
    edit(restore)
    (sm / "saved_model.pb").write_bytes(proto.SerializeToString())


def test_the_saver_may_restore_only_the_package_variables(tmp_path: Path) -> None:
    sm = models.keras_savedmodel(tmp_path / "sm")

    def elsewhere(restore: Any) -> None:
        const = restore.node_def.add(name="elsewhere", op="Const")
        const.attr["dtype"].type = tf.string.as_datatype_enum
        const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("/srv/other/variables"))
        (node,) = [n for n in restore.node_def if n.op == "RestoreV2"]
        node.input[0] = "elsewhere:output:0"

    _edit_restore_function(sm, elsewhere)
    refused = _refusal(sm, "RestoreV2", "sm/saved_model.pb")
    assert "RestoreV2 in __inference__traced_restore" in str(refused)
    assert "/srv/other" not in str(refused)


def test_the_restore_function_may_not_write(tmp_path: Path) -> None:
    sm = models.keras_savedmodel(tmp_path / "sm")

    def write_too(restore: Any) -> None:
        save = restore.node_def.add(name="save_again", op="SaveV2")  # on the saver's own file, even
        save.input.append(restore.signature.input_arg[0].name)

    _edit_restore_function(sm, write_too)
    refused = _refusal(sm, "SaveV2", "sm/saved_model.pb")
    assert "the restore function" in str(refused)


def test_checkpoint_ops_reached_from_serving_are_refused(tmp_path: Path) -> None:
    sm = models.keras_savedmodel(tmp_path / "sm")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sm / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    restore = next(f.signature.name for f in graph.library.function if "traced_restore" in f.signature.name)
    serving = next(f for f in graph.library.function if f.signature.name.startswith("__inference___call__"))
    call = serving.node_def.add(name="sneaky", op="StatefulPartitionedCall")
    call.attr["f"].func.name = restore  # the saver's restore, now also reachable from serving
    (sm / "saved_model.pb").write_bytes(proto.SerializeToString())
    _refusal(sm, "RestoreV2", "sm/saved_model.pb")


def test_ordinary_savedmodels_load_without_trust(tmp_path: Path) -> None:
    net = models.keras_mlp()
    m = Model.load(models.keras_savedmodel(tmp_path / "sm"))
    x = models.dataset(5)[0]
    np.testing.assert_allclose(m.predict(x)["output_0"], net(x).numpy(), rtol=1e-6, atol=1e-6)
    # The package aimass writes (a re-saved SavedModel) loads without trust as well.
    again = Model.load(m.save(tmp_path / "pkg"))
    np.testing.assert_allclose(again.predict(x)["output_0"], net(x).numpy(), rtol=1e-6, atol=1e-6)
    two = Model.load(models.two_signature_savedmodel(tmp_path / "two"), options={"signature": "triple"})
    out = two.predict({"x": np.eye(2, dtype=np.float32), "n": np.array([5, 7], np.int32)})
    np.testing.assert_array_equal(out["n2"], np.array([10, 14], np.int32))


def test_common_keras_layers_are_on_the_allow_list(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    img, tok = keras.Input((8, 8, 3), name="img"), keras.Input((5,), name="tok", dtype="int32")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(img)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D()(keras.layers.BatchNormalization()(h)))
    s = keras.layers.LayerNormalization()(keras.layers.LSTM(4)(keras.layers.Embedding(20, 4)(tok)))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([h, s]))
    net = keras.Model([img, tok], out)
    net.export(str(tmp_path / "sm"), verbose=False)
    m = Model.load(tmp_path / "sm")  # no trust: Conv2D, pooling, batch/layer norm, While (LSTM), Softmax
    x = {"img": np.ones((2, 8, 8, 3), np.float32), "tok": np.array([[1, 2, 3, 4, 5]] * 2, np.int32)}
    np.testing.assert_allclose(m.predict(x)["output_0"], net([x["img"], x["tok"]]).numpy(), rtol=1e-5, atol=1e-6)


def test_a_tflite_file_with_flex_ops_is_a_typed_load_error(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")

    class Scale(tf.Module):  # type: ignore[name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, tf.ones([2, 2])) * 2.0}

    module = Scale()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.SELECT_TF_OPS]  # every op becomes a Flex op
    (tmp_path / "flex.tflite").write_bytes(converter.convert())
    with pytest.raises(ModelLoadError, match=r"TFLite file 'flex\.tflite' uses Select TensorFlow \(Flex\) ops") as e:
        Model.load(tmp_path / "flex.tflite")
    assert "FlexMatMul" in str(e.value) and str(tmp_path) not in str(e.value)
