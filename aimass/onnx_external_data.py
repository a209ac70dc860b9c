"""ONNX external data: read only from the model's own directory, then embedded in the model.

ONNX is a file format two frameworks read (onnxruntime and TensorRT's ONNX parser), so the one
reader of its external data lives here, below the frameworks, rather than in either folder.

An ONNX tensor may keep its bytes in another file (``data_location: EXTERNAL``, ``location:
encoder.onnx.data``); ``torch.onnx.export`` writes such a file even for small models. Handed a
model's bytes, onnxruntime resolves those locations against the process's working directory, so
a hostile model naming ``aimass.toml`` or ``.env`` would read the server's files into its output.

:func:`embed_external_data` is the one place aimass reads external data. Every tensor of the model
(initializers, sparse initializers, attribute tensors, in every subgraph and function) that names
a location is checked first: the location must be a plain relative POSIX name
(:func:`aimass.package.check_member_name`: no absolute path, no ``..``), must lead to a regular
file inside the model's directory through no symbolic link (:func:`aimass.package.member`), and
inside a package must be an artifact its manifest lists and checksums. Anything else is a
:class:`~aimass.errors.ModelLoadError` naming the tensor and the location. The data is then read
relative to the model's directory (never the working directory) with onnx's own reader, which
checks offsets and lengths against the file, and embedded, so onnxruntime, the quantizers and
``Model.save`` see one self-contained model: a saved package holds one checksummed ``model.onnx``.

Embedding is bounded by protobuf's 2 GiB message limit, checked from the sizes before any byte is
read; larger models are refused with that reason.

Example:
    >>> proto = onnx.load("fix/encoder.onnx", load_external_data=False)          # doctest: +SKIP
    >>> embed_external_data(proto, Path("fix"), listed=None, where="encoder.onnx")  # doctest: +SKIP
    1
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from aimass.dependencies import require
from aimass.errors import IntegrityError, ModelLoadError
from aimass.package import checksummed_names, is_package, member

__all__ = ["MAX_EMBEDDED_BYTES", "embed_external_data", "external_tensors", "self_contained"]

# protobuf refuses to serialise or parse a message of 2 GiB or more.
MAX_EMBEDDED_BYTES = 2**31 - 1
# A location is text the model chose: shown in errors, but never at any length.
_SHOWN = 120


def _onnx() -> Any:
    return require("onnx", feature="reading ONNX files", extra="onnx")


def _graph_tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for tensor in graph.initializer:
        yield f"initializer {tensor.name!r}{where}", tensor
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        yield f"sparse initializer {name!r}{where}", sparse.values
        yield f"sparse initializer {name!r} (indices){where}", sparse.indices
    yield from _node_tensors(graph.node, where)


def _node_tensors(nodes: Any, where: str) -> Iterator[tuple[str, Any]]:
    for node in nodes:
        label = node.name or node.op_type
        for attr in node.attribute:
            own = f"attribute {attr.name!r} of node {label!r}{where}"
            if attr.HasField("t"):
                yield own, attr.t
            for tensor in attr.tensors:
                yield own, tensor
            sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            for s in [*sparse, *attr.sparse_tensors]:
                yield own, s.values
                yield f"{own} (indices)", s.indices
            inner = f" in a subgraph of node {label!r}{where}"
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g, inner)
            for graph in attr.graphs:
                yield from _graph_tensors(graph, inner)


def _all_tensors(proto: Any) -> Iterator[tuple[str, Any]]:
    """Every TensorProto a model holds, with a label for errors (onnx's own walk skips sparse ones)."""
    yield from _graph_tensors(proto.graph, "")
    for function in proto.functions:
        yield from _node_tensors(function.node, f" in function {function.name!r}")
    for info in proto.training_info:
        yield from _graph_tensors(info.initialization, " in training initialization")
        yield from _graph_tensors(info.algorithm, " in training algorithm")


def external_tensors(proto: Any) -> list[tuple[str, Any]]:
    """``(label, tensor)`` for every tensor of ``proto`` whose data lives in another file.

    Example:
        >>> [label for label, _ in external_tensors(onnx.load("m.onnx", load_external_data=False))]  # doctest: +SKIP
        ["initializer 'w1'", "initializer 'w2'"]
    """
    external = _onnx().TensorProto.EXTERNAL
    return [(label, t) for label, t in _all_tensors(proto) if t.data_location == external]


def _entries(tensor: Any) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _shown(location: str) -> str:
    return repr(location if len(location) <= _SHOWN else location[:_SHOWN] + "...")


def _data_file(label: str, location: str, base: Path | None, listed: Collection[str] | None, where: str) -> Path:
    """The file ``location`` names, checked; ModelLoadError naming the tensor and the location otherwise."""
    said = f"ONNX model {where!r}: {label} keeps its data in {_shown(location)}"
    if base is None:
        raise ModelLoadError(
            f"{said}, but the model was given in memory (bytes or a ModelProto), so there is no directory to "
            "read it from: load the .onnx file by its path, with its data file beside it"
        )
    try:
        file = member(base, location, f"ONNX model {where!r}")
    except IntegrityError:
        raise ModelLoadError(
            f"{said}: expected the plain relative name of a file inside the model's directory, got one that "
            "leaves it (an absolute path, '.' or '..' components, or a symbolic link on the way)"
        ) from None
    if listed is not None and location not in listed:
        raise ModelLoadError(
            f"{said}, which the package's manifest does not list: expected one of its checksummed artifacts"
        )
    if not file.is_file():
        raise ModelLoadError(f"{said}: expected a file beside the model, found none")
    return file


def embed_external_data(proto: Any, base: Path | None, *, listed: Collection[str] | None, where: str) -> int:
    """Check every external location of ``proto``, then read the data into it; the tensors embedded.

    ``base`` is the directory of the ``.onnx`` file (None when the model came as bytes: any external
    tensor is then refused); ``listed`` the names a package's manifest checksums, relative to
    ``base`` (None outside a package: any regular file inside ``base`` may be read); ``where`` the
    model's name for messages (never an absolute path). All locations are checked before any is read.

    Example:
        >>> listed = {"model.onnx", "model.onnx.data"}
        >>> embed_external_data(proto, Path("pkg"), listed=listed, where="model.onnx")  # doctest: +SKIP
        4
    """
    tensors = external_tensors(proto)
    if not tensors:
        return 0
    onnx = _onnx()
    files: dict[str, int] = {}
    total = proto.ByteSize()
    for label, tensor in tensors:
        entries = _entries(tensor)
        location = entries.get("location", "")
        file = _data_file(label, location, base, listed, where)
        size = files.setdefault(location, file.stat().st_size)
        try:
            offset = int(entries.get("offset") or 0)
            length = int(entries["length"]) if entries.get("length") else size - offset
        except ValueError:
            raise ModelLoadError(f"ONNX model {where!r}: {label}: offset or length is not an integer") from None
        total += max(length, 0)
    if total > MAX_EMBEDDED_BYTES:
        raise ModelLoadError(
            f"ONNX model {where!r}: with its external data the model has {total} bytes; aimass embeds external "
            f"data and protobuf holds at most {MAX_EMBEDDED_BYTES}"
        )
    for label, tensor in tensors:
        try:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(base))
        except (ValueError, OSError, onnx.checker.ValidationError) as e:  # bounds, unreadable file
            message = str(e).replace(str(base), "<model directory>")
            raise ModelLoadError(f"ONNX model {where!r}: {label}: its external data does not read: {message}") from e
    return len(tensors)


def self_contained(data: bytes, base: Path | None, where: str) -> bytes:
    """``data`` (an ONNX file's bytes) with every external tensor checked and read from ``base``.

    Given bytes, onnxruntime would resolve external locations against the working directory and
    TensorRT's parser against the file's directory with no limits; this reads them relative to the
    model file instead, and inside a package only from listed artifacts. Data without external
    tensors comes back as it is.

    Example:
        >>> self_contained(Path("fix/encoder.onnx").read_bytes(), Path("fix"), "encoder.onnx")  # doctest: +SKIP
    """
    onnx = _onnx()
    try:
        proto = onnx.load_model_from_string(data)  # reads no external data: that is ours to do
    except Exception as e:  # google.protobuf DecodeError and friends
        raise ModelLoadError(f"ONNX model {where!r} does not parse as an ONNX ModelProto: {e}") from e
    if not external_tensors(proto):
        return data
    listed = None
    if base is not None and any(is_package(d) for d in (base, *base.parents[:8])):  # as checksummed_names walks
        listed = checksummed_names(base)[1]
    embed_external_data(proto, base, listed=listed, where=where)
    return bytes(proto.SerializeToString())
