"""The operators a SavedModel names, read from ``saved_model.pb`` without loading it.

A SavedModel is a program: its graphs and functions name TensorFlow ops, and some of them read or
write files (``ReadFile``, ``WriteFile``, ``MatchingFiles``, ``SaveV2``/``RestoreV2``), call Python
(``PyFunc``, ``EagerPyFunc``) or reach other processes. :func:`check_savedmodel` parses the
``SavedModel`` protobuf (TensorFlow's generated proto module: parsing runs no model code) and checks,
before ``tf.saved_model.load`` is called, every node of every meta graph's ``graph_def`` and every
function of its library (``FunctionDef.node_def``; functions called by name or through any
function-valued attribute are in the library too, so all are inspected) against the reviewed
allow-list ``allowed_ops.txt`` beside this module.

Every SavedModel also holds the checkpoint machinery its ``saver_def`` names: two calls in the
graph (save and restore) to functions that run ``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``
... on a file prefix given as the call's argument (``saver_filename``). TensorFlow 2's loader does
not run them (it restores the package's own ``variables/`` from Python), and TF1-style loaders feed
that argument with the package's own variables path. So the functions reachable *only* from those
two calls may also use the ops of ``allowed_saver_ops.txt``, provided every file-prefix input of a
file op is derived from that argument (string constants joined to it must stay relative: no ``..``,
no leading ``/``, no ``scheme://``), and the restore call's functions only read (no ``SaveV2`` or
``MergeV2Checkpoints``: TF1-style loaders run the restore call). The same ops anywhere else, in a
function nested below a saver function, or on a path taken from anywhere else are refused; so are
TF1-style savers, which are plain graph nodes rather than function calls.

Example:
    >>> from aimass.frameworks.keras.savedmodel_ops import check_savedmodel
    >>> check_savedmodel(Path("exported/"), "exported/saved_model.pb", trusted=False)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimass.errors import ModelLoadError
from aimass.programs import allow_list, check_program

__all__ = ["SavedModelOps", "check_savedmodel", "savedmodel_ops"]

_HERE = Path(__file__).parent
ALLOWED_OPS = _HERE / "allowed_ops.txt"
ALLOWED_SAVER_OPS = _HERE / "allowed_saver_ops.txt"
_KIND = "SavedModel"
_CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
# The input of each file op that names a path (checkpoint prefix); index into its data inputs.
_WRITES = frozenset({"SaveV2", "MergeV2Checkpoints"})
_PATH_INPUTS: dict[str, tuple[int, ...]] = {
    "SaveV2": (0,),
    "RestoreV2": (0,),
    "MergeV2Checkpoints": (0, 1),
    "ShardedFilename": (0,),
}


@dataclass
class SavedModelOps:
    """What :func:`savedmodel_ops` found: the ops to check against ``allowed_ops.txt``, the ops of
    saver-only functions (``allowed_saver_ops.txt`` as well), and why some saver ops count as serving."""

    serving: set[str] = field(default_factory=set)
    saver: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _saved_model_proto(data: bytes, shown: str) -> Any:
    # Importing the generated proto module imports tensorflow (its package), never a model.
    pb2 = importlib.import_module("tensorflow.core.protobuf.saved_model_pb2")
    proto = pb2.SavedModel()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError; a truncated or foreign file
        raise ModelLoadError(f"{shown} is not a SavedModel protobuf: {type(e).__name__}") from None
    return proto


def _called(node: Any, library: set[str]) -> Iterator[str]:
    """The library functions a node calls: by op name, or through any function-valued attribute."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            for f in value.list.func:
                yield f.name


def _reachable(roots: Iterable[str], functions: dict[str, Any]) -> set[str]:
    names = set(functions)
    seen: set[str] = set()
    todo = [r for r in roots if r in functions]
    while todo:  # iterative: a hostile file may nest calls deeply
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in functions[name].node_def:
            todo.extend(f for f in _called(node, names) if f not in seen)
    return seen


def _node_name(tensor: str) -> str:
    """``"^a"``, ``"a:0"``, ``"a:output:0"`` -> ``"a"``."""
    return tensor.lstrip("^").split(":", 1)[0]


def _data_inputs(node: Any) -> list[str]:
    return [i for i in node.input if not i.startswith("^")]


def _safe_string_constant(node: Any) -> bool:
    tensor = node.attr["value"].tensor
    for raw in tensor.string_val:
        text = raw.decode("utf-8", "replace")
        if text.startswith(("/", "\\")) or ".." in text or "://" in text:
            return False
    return True


def _paths_not_from(function: Any, argument: str) -> list[tuple[str, str]]:
    """The file ops of ``function`` whose path does not derive from ``argument`` only: (op, why)."""
    nodes = {n.name: n for n in function.node_def}
    where = function.signature.name
    wrong: list[tuple[str, str]] = []
    for node in function.node_def:
        for index in _PATH_INPUTS.get(node.op, ()):
            inputs = _data_inputs(node)
            if index >= len(inputs):
                wrong.append((node.op, f"{node.op} in {where} has no path input"))
                continue
            reaches_argument, why = False, ""
            todo, seen = [_node_name(inputs[index])], set()
            while todo and not why:
                name = todo.pop()
                if name in seen:
                    continue
                seen.add(name)
                source = nodes.get(name)
                if name == argument:
                    reaches_argument = True
                elif source is None:  # another argument: a variable handle, never a path
                    why = f"{node.op} in {where} takes its path from {name!r}, not the saver's file"
                elif source.op == "Const" and not _safe_string_constant(source):
                    why = f"{node.op} in {where} joins a path that leaves the package"
                else:
                    todo.extend(_node_name(i) for i in _data_inputs(source))
            if not why and not reaches_argument:
                why = f"{node.op} in {where} uses a fixed path, not the saver's file"
            if why:
                wrong.append((node.op, why))
    return wrong


def savedmodel_ops(data: bytes, shown: str) -> SavedModelOps:
    """Every op a ``saved_model.pb`` names, split into serving ops and ops of saver-only functions.

    ``shown`` is the file's name in messages (never an absolute path).
    """
    proto = _saved_model_proto(data, shown)
    found = SavedModelOps()
    for meta in proto.meta_graphs:
        graph = meta.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        names = set(functions)
        restore_node, saver_nodes, filename = "", set(), ""
        if meta.HasField("saver_def"):
            filename = _node_name(meta.saver_def.filename_tensor_name)
            restore_node = _node_name(meta.saver_def.restore_op_name)
            saver_nodes = {_node_name(meta.saver_def.save_tensor_name), restore_node}
        restores: set[str] = set()  # functions the restore call runs: loaders may run them, so they only read
        serving_roots: list[str] = []
        saver_calls: dict[str, str] = {}  # saver-called function -> its argument holding the file prefix
        for node in graph.node:
            called = list(_called(node, names))
            inputs = _data_inputs(node)
            function = functions.get(called[0]) if len(called) == 1 else None
            if (
                node.name in saver_nodes
                and node.op in _CALL_OPS
                and function is not None
                and inputs
                and _node_name(inputs[0]) == filename
                and function.signature.input_arg
            ):
                # TF2's saver: a call whose first argument is the saver's file (fed by the loader).
                saver_calls[called[0]] = function.signature.input_arg[0].name
                if node.name == restore_node:
                    restores.add(called[0])
                found.serving.add(node.op)
                continue
            if node.op not in names:  # a direct call by function name is not an op
                found.serving.add(node.op)  # TF1-style savers (SaveV2 ... as graph nodes) count as serving
            serving_roots.extend(called)
        # The object graph's functions, the signatures' and any other are all in the library: what
        # is not reachable from the saver calls alone is checked as serving code.
        saver_only = _reachable(saver_calls, functions) - _reachable(serving_roots, functions)
        for name, function in functions.items():
            ops = {n.op for n in function.node_def if n.op not in names}
            if name not in saver_only:
                found.serving.update(ops)
                continue
            found.saver.update(ops)
            if name in saver_calls:
                wrong = _paths_not_from(function, saver_calls[name])
                if name in restores:  # TF1-style loaders run the restore call: it must not write
                    wrong += [(op, f"{op} in {name}, the restore function") for op in sorted(ops & _WRITES)]
            else:  # nested deeper than TF's own savers ever are: no file op allowed there
                wrong = [(op, f"{op} in {name}, not in a saver call") for op in sorted(ops & set(_PATH_INPUTS))]
            for op, why in wrong:
                found.serving.add(op)  # a path from elsewhere: the op counts as serving code
                found.notes.append(why)
    return found


def check_savedmodel(directory: Path, shown: str, *, trusted: bool) -> None:
    """Refuse the SavedModel in ``directory`` unless every op it names is allowed, or ``trusted``.

    Raises :class:`~aimass.errors.UnsafeProgram` naming ``shown`` (the file's name for users) and
    the ops; runs before TensorFlow loads anything from ``directory``.
    """
    if trusted:
        return  # the user vouched for the file: not even parsed here
    try:
        data = (directory / "saved_model.pb").read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read {shown}: {e.strerror}") from None
    found = savedmodel_ops(data, shown)
    saver_only = allow_list(ALLOWED_SAVER_OPS)
    operators = found.serving | {op for op in found.saver if op not in saver_only}
    check_program(shown, _KIND, operators, allow_list(ALLOWED_OPS), trusted=False, detail="; ".join(found.notes[:3]))
