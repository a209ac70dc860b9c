"""ONNX external data reads no file but the model's own: never the working directory, never outside.

A hostile model names a file for an initializer's bytes and returns that initializer as an output.
Before the fix, onnxruntime (given the model's bytes) resolved ``location: aimass.toml`` against
the process's working directory and the prediction held the config's token.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from aimass import Model, ModelLoadError
from aimass.package import write_package
from aimass.schema import DType, Schema, TensorSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SECRET = b"token = 'tok-7f3a9c-SECRET'\n"


def _reading(location: str, length: int = len(SECRET), *, where: str = "initializer") -> bytes:
    """A model whose output ``out`` is a UINT8 tensor of ``length`` bytes kept in external file ``location``.

    ``where`` puts that tensor in an ``initializer``, a ``sparse`` initializer (its values), or the
    ``attribute`` of a Constant node.
    """
    from onnx import TensorProto, helper, numpy_helper

    leak = TensorProto(name="leak", data_type=TensorProto.UINT8, dims=[length])
    leak.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(length)}.items():
        entry = leak.external_data.add()
        entry.key, entry.value = key, value
    nodes = [helper.make_node("Add", ["x", "zero"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros(4, np.float32), "zero")]
    sparse = []
    if where == "initializer":
        inits.append(leak)
        nodes.append(helper.make_node("Identity", ["leak"], ["out"]))
    elif where == "sparse":
        indices = numpy_helper.from_array(np.arange(length, dtype=np.int64), "leak_indices")
        sparse.append(helper.make_sparse_tensor(leak, indices, [length]))
        nodes.append(helper.make_node("Identity", ["leak"], ["out"]))
    else:
        nodes.append(helper.make_node("Constant", [], ["out"], name="const", value=leak))
    graph = helper.make_graph(
        nodes,
        "reader",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4]),
            helper.make_tensor_value_info("out", TensorProto.UINT8, [length]),
        ],
        initializer=inits,
        sparse_initializer=sparse,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _schema(length: int = len(SECRET)) -> Schema:
    return Schema(
        inputs=[TensorSpec(name="x", dtype=DType.FP32, shape=[-1, 4])],
        outputs=[
            TensorSpec(name="y", dtype=DType.FP32, shape=[-1, 4]),
            TensorSpec(name="out", dtype=DType.UINT8, shape=[length]),
        ],
    )


def _package(target: Path, model: bytes, files: dict[str, bytes] | None = None, *, listed: bool = True) -> Path:
    """A package holding ``model`` as model.onnx plus ``files`` (listed in the manifest when ``listed``)."""

    def write(d: Path) -> list[str]:
        (d / "model.onnx").write_bytes(model)
        for name, data in (files or {}).items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        return ["model.onnx", *(files or {})] if listed else ["model.onnx"]

    fields = {"backend": "onnx", "framework": "onnxruntime", "aimass_version": "0", "schema": _schema().model_dump()}
    return write_package(target, write, fields)


def _refused(source: Path | bytes, *expected: str) -> str:
    """Load ``source``: it must be refused, with ``expected`` in the message and the secret not."""
    with pytest.raises(ModelLoadError) as info:
        Model.load(source, backend="onnx").predict(np.zeros((1, 4), np.float32))
    message = str(info.value)
    for text in expected:
        assert text in message
    assert "SECRET" not in message and "tok-7f3a9c" not in message
    return message


@pytest.fixture
def server_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that holds a config with a token, as a server's does."""
    cwd = tmp_path / "server"
    cwd.mkdir()
    (cwd / "aimass.toml").write_bytes(SECRET)
    (cwd / ".env").write_bytes(SECRET)
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("location", ["aimass.toml", ".env"])
def test_a_package_cannot_read_the_working_directory(server_dir: Path, tmp_path: Path, location: str) -> None:
    pkg = _package(tmp_path / "library" / "evil", _reading(location))
    _refused(pkg, "initializer 'leak'", repr(location))


def test_a_model_file_cannot_read_the_working_directory(server_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "evil.onnx").write_bytes(_reading("aimass.toml"))
    _refused(tmp_path / "models" / "evil.onnx", "initializer 'leak'", "'aimass.toml'", "found none")


def test_model_bytes_cannot_read_the_working_directory(server_dir: Path) -> None:
    # Bytes have no directory: nothing external may be read for them.
    _refused(_reading("aimass.toml"), "initializer 'leak'", "'aimass.toml'", "given in memory")


def test_a_proto_cannot_read_the_working_directory(server_dir: Path) -> None:
    proto = onnx.load_model_from_string(_reading("aimass.toml"))
    with pytest.raises(ModelLoadError, match="initializer 'leak' keeps its data in 'aimass.toml'"):
        Model.load(proto)


@pytest.mark.parametrize("where, label", [("sparse", "sparse initializer 'leak'"), ("attribute", "node 'const'")])
def test_every_kind_of_tensor_is_checked(server_dir: Path, tmp_path: Path, where: str, label: str) -> None:
    pkg = _package(tmp_path / "evil", _reading("aimass.toml", where=where))
    _refused(pkg, label, "'aimass.toml'")


def test_an_unlisted_file_inside_the_package_is_refused(server_dir: Path, tmp_path: Path) -> None:
    # The file is in the package, but no checksum covers it: it could have been dropped there later.
    pkg = _package(tmp_path / "evil", _reading("weights.bin"), {"weights.bin": SECRET}, listed=False)
    _refused(pkg, "initializer 'leak'", "'weights.bin'", "does not list")


def test_absolute_locations_are_refused(server_dir: Path, tmp_path: Path) -> None:
    location = str(server_dir / "aimass.toml")
    pkg = _package(tmp_path / "evil", _reading(location))
    message = _refused(pkg, "initializer 'leak'", "leaves it")
    assert message.count(str(tmp_path)) == 1  # the location the model names, shown once, no path of ours


@pytest.mark.parametrize("location", ["../aimass.toml", "sub/../../aimass.toml", "./../aimass.toml"])
def test_climbing_locations_are_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "aimass.toml").write_bytes(SECRET)
    (tmp_path / "pkgs").mkdir()
    pkg = _package(tmp_path / "pkgs" / "evil", _reading(location.replace("../", "../../", 1)))
    _refused(pkg, "initializer 'leak'", "leaves it")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "evil.onnx").write_bytes(_reading(location))
    _refused(tmp_path / "models" / "evil.onnx", "initializer 'leak'", "leaves it")


def test_symlinks_out_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.toml").write_bytes(SECRET)
    models = tmp_path / "models"
    models.mkdir()
    (models / "evil.onnx").write_bytes(_reading("weights.bin"))
    (models / "weights.bin").symlink_to(tmp_path / "secret.toml")
    _refused(models / "evil.onnx", "initializer 'leak'", "'weights.bin'", "symbolic link")
    # A linked directory on the way is refused too.
    (models / "evil.onnx").write_bytes(_reading("data/secret.toml"))
    (models / "data").symlink_to(tmp_path, target_is_directory=True)
    _refused(models / "evil.onnx", "initializer 'leak'", "'data/secret.toml'", "symbolic link")


def test_onnxruntime_memory_address_locations_are_refused(tmp_path: Path) -> None:
    # onnxruntime reads "*/_ORT_MEM_ADDR_/*" as a raw pointer in its own process: never a file name here.
    path = tmp_path / "evil.onnx"
    path.write_bytes(_reading("*/_ORT_MEM_ADDR_/*"))
    _refused(path, "initializer 'leak'", "_ORT_MEM_ADDR_")


def test_data_inside_the_package_and_listed_is_read(server_dir: Path, tmp_path: Path) -> None:
    # The same reader, its data in a listed file of the package: it loads, from any working directory.
    data = bytes(range(len(SECRET)))
    pkg = _package(tmp_path / "good", _reading("weights/leak.bin"), {"weights/leak.bin": data})
    os.chdir(tmp_path)
    out = Model.load(pkg.relative_to(tmp_path)).predict(np.zeros((1, 4), np.float32))
    assert bytes(out["out"]) == data
    # A copy elsewhere reads its own copy of the data.
    shutil.copytree(pkg, tmp_path / "copy")
    (pkg / "weights" / "leak.bin").write_bytes(b"\0" * len(data))
    assert bytes(Model.load(tmp_path / "copy").predict(np.zeros((1, 4), np.float32))["out"]) == data


def test_a_length_beyond_the_file_is_refused(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "short", _reading("leak.bin", length=64), {"leak.bin": b"0123"})
    _refused(pkg, "initializer 'leak'", "does not read")


def test_sizes_past_the_embedding_limit_are_refused_before_reading(tmp_path: Path) -> None:
    # A few bytes of model claiming 2 GiB of data: refused from the declared sizes, nothing allocated.
    pkg = _package(tmp_path / "huge", _reading("leak.bin", length=2**31), {"leak.bin": b"0123"})
    _refused(pkg, "'model.onnx'", "protobuf holds at most")


@pytest.mark.parametrize("location", ["../aimass.toml", "/etc/hostname"])
def test_tensorrt_builds_only_from_checked_onnx(server_dir: Path, tmp_path: Path, location: str) -> None:
    # TensorRT's own parser would read any external file the model names; the check comes before
    # TensorRT is imported, so it holds (and is tested) on machines without a GPU too.
    from aimass.frameworks.tensorrt.backend import BuildOptions, build_engine

    model_dir = server_dir / "m"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(_reading(location))
    with pytest.raises(ModelLoadError) as info:
        build_engine(model_dir / "model.onnx", BuildOptions(), 0)
    assert "leak" in str(info.value) and "SECRET" not in str(info.value)
