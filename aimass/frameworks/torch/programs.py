"""Torch model files are programs: what each one names, read without running it, and the rule for each.

Three kinds of torch file reach :func:`torch.export.load`, :func:`torch.jit.load` or :func:`torch.load`:

* ``.pt2`` (``torch.export`` archives, what ``Model.save`` writes): a zip holding JSON graphs.
  :func:`pt2_operators` reads the JSON with :mod:`zipfile` and :mod:`json` (nothing is
  unpickled, nothing is imported) and lists every operator target of every graph, nested
  ``cond``/``while_loop`` bodies included, and every other thing ``torch.export.load`` would turn
  into running code: ``guards_code`` (``exec``-ed as Python when the module is built), symbolic
  shape expressions outside a small arithmetic grammar (``sympy.sympify`` ``eval``-s them), custom
  and opaque objects, pickled weights or constants (``torch.load(weights_only=False)``), a
  sample-inputs pickle naming globals other than tensor rebuilding, ahead-of-time compiled
  libraries, and any member outside the archive layout ``torch.export.save`` writes. The first
  kind goes through the reviewed allow-list ``allowed_ops.txt`` beside this module; the others
  are never on it, so only ``trust_code`` lets them through.
* TorchScript (a zip with ``code/`` or ``constants.pkl``): needs trust, full stop. Its
  ``data.pkl`` is unpickled inside ``torch.jit.load``, which compiles the scripted classes of
  ``code/`` and calls their ``__setstate__`` while loading; no torch API compiles the code
  without running that unpickling, and reading ``code/*.py`` as text cannot see what the
  compiler resolves (``torch.ops.*`` by attribute, class types, methods called from pickles).
* Anything else: ``torch.load(weights_only=True)`` (data), unless the caller allows pickle.

Example:
    >>> from aimass.frameworks.torch.programs import check_torch_file
    >>> check_torch_file(Path("model.pt2"), trusted=False)  # doctest: +SKIP
    Traceback (most recent call last):
    aimass.errors.UnsafeProgram: model.pt2: this torch.export archive is a program and names operators
    outside its allow-list: aten::from_file; ...
"""

from __future__ import annotations

import ast
import json
import pickletools
import re
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from aimass.errors import ModelLoadError, UnsafeProgram
from aimass.programs import allow_list, check_program

__all__ = ["ALLOWED_OPS", "check_torch_file", "is_torchscript", "pt2_operators"]

ALLOWED_OPS = Path(__file__).with_name("allowed_ops.txt")

PT2_KIND = "torch.export archive"
TORCHSCRIPT_KIND = "TorchScript file"

# "torch.ops.<namespace>.<op>[.<overload>]" -> "<namespace>::<op>". Anything else keeps its full
# text: torch.export.load resolves a target by getattr from the torch, operator or math module
# ("torch.os.system" is a target it would call), so only this exact form may be shortened.
_OP_TARGET = re.compile(r"torch\.ops\.([a-z][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z][A-Za-z0-9_]*))?")

# The members torch.export.save writes under the archive's one top-level folder.
_FIXED_MEMBERS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_MODEL_JSON = re.compile(r"models/([A-Za-z0-9_]+)\.json")
_WEIGHT = re.compile(r"data/weights/(weight_[0-9]+|[A-Za-z0-9_]+_weights_config\.json)")
_CONSTANT = re.compile(r"data/constants/(tensor_[0-9]+|[A-Za-z0-9_]+_constants_config\.json)")
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[A-Za-z0-9_]+\.pt")

# A torch.save zip (the sample inputs): data.pkl, raw storages, format stamps. A constants.pkl or
# code/ would make torch.load hand the file to torch.jit.load when it retries without weights_only.
_TORCH_SAVE_MEMBER = re.compile(
    r"(data\.pkl|data/[0-9]+|byteorder|version|\.data/version|\.data/serialization_id|\.format_version|\.storage_alignment)"
)
# What rebuilding tensors from a torch.save pickle names; anything else is a Python object.
_TENSOR_GLOBALS = re.compile(
    r"torch\._utils\.(_rebuild_tensor_v2|_rebuild_tensor|_rebuild_parameter)|torch\.[A-Za-z]*Storage"
    r"|collections\.OrderedDict|torch\.Size|torch\.device"
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}

# Symbolic shape expressions ("Symbol('s77', positive=True, integer=True)", "s0 + 1") go to
# sympy.sympify, which eval()s them with every builtin in scope: only arithmetic on symbols and
# calls of these sympy names pass.
_SYMPY_CALLS = {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "floor", "ceiling", "sqrt",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
}  # fmt: skip
# Guards (Python that torch.export.load exec()s) may read input sizes and a few math names.
_TENSOR_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_MATH_NAMES = {"isnan", "inf", "floor", "ceil", "trunc"}
_SYMPY_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Constant, ast.Name, ast.Load,
    ast.Call, ast.keyword, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip (``code/`` or ``constants.pkl`` under its top folder).

    Example:
        >>> is_torchscript(Path("mlp.ts"))  # doctest: +SKIP
        True
    """
    try:
        with zipfile.ZipFile(path) as z:
            return any(_inner(n)[:5] == "code/" or _inner(n) == "constants.pkl" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_torch_file(path: Path, *, trusted: bool, shown: str | None = None) -> None:
    """Refuse a program file before torch reads it: TorchScript always, ``.pt2`` outside the allow-list.

    ``shown`` is the name errors give the file (default: its base name, never an absolute path).
    Other files (``torch.load`` with ``weights_only=True``) pass: they are data.

    Example:
        >>> check_torch_file(Path("pkg/model.pt2"), trusted=False)  # doctest: +SKIP
    """
    name = shown or path.name
    if trusted:
        return
    if path.suffix == ".pt2":
        check_program(name, PT2_KIND, pt2_operators(path, shown=name), allow_list(ALLOWED_OPS), trusted=False)
    elif is_torchscript(path):
        raise UnsafeProgram(
            name,
            TORCHSCRIPT_KIND,
            ["TorchScript code (code/, run by torch.jit.load while unpickling data.pkl)"],
            detail="TorchScript cannot be inspected without running it",
        )


def pt2_operators(path: Path, *, shown: str | None = None) -> list[str]:
    """Every operator and every other executable thing a ``.pt2`` archive names, read from its JSON only.

    Operators read ``aten::linear``, ``higher_order::cond``, ``_operator.getitem``; what is not an
    operator reads ``pickle:<member>``, ``python:guards_code``, ``sympy:<expr>``, ``class:<fqn>``,
    ``member:<name>``, so the allow-list (operators only) never admits it.

    Example:
        >>> sorted(set(pt2_operators(Path("mlp.pt2"))))  # doctest: +SKIP
        ['aten::linear', 'aten::relu']
    """
    name = shown or path.name
    try:
        with zipfile.ZipFile(path) as z:
            return list(_archive_operators(z))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"{name!r} is not a readable torch.export archive: {type(e).__name__}: {e}") from None


# -- the archive -------------------------------------------------------------------------------


def _inner(member: str) -> str:
    """A member's name under the archive's top-level folder ("mlp/models/model.json" -> "models/model.json")."""
    return member.split("/", 1)[1] if "/" in member else ""


def _archive_operators(z: zipfile.ZipFile) -> Iterator[str]:
    names = z.namelist()
    if len(set(names)) != len(names):
        # Python's zipfile and torch's reader may pick different copies of a repeated name.
        yield "member:repeated names"
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1:
        yield "member:not one top-level folder"
    configs: dict[str, Any] = {}
    for member in names:
        inner = _inner(member)
        if inner in _FIXED_MEMBERS or member.endswith("/"):
            continue
        if inner.endswith("_config.json") and (_WEIGHT.fullmatch(inner) or _CONSTANT.fullmatch(inner)):
            configs[inner] = json.loads(z.read(member))
        elif _MODEL_JSON.fullmatch(inner):
            yield from _graph_operators(json.loads(z.read(member)))
        elif _SAMPLE_INPUTS.fullmatch(inner):
            yield from _sample_input_globals(z.read(member), inner)
        elif not (_WEIGHT.fullmatch(inner) or _CONSTANT.fullmatch(inner)):
            # data/aotinductor/ (compiled libraries), legacy pickled weights, extra files, ...
            yield f"member:{inner or member}"
    for inner, config in configs.items():
        entries = config.get("config", {}) if isinstance(config, dict) else {}
        if not isinstance(entries, dict):
            yield f"member:{inner}"
            continue
        folder = inner.rsplit("/", 1)[0]
        for fqn, meta in entries.items():
            path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
            if (
                not isinstance(meta, dict)
                or meta.get("use_pickle")
                or not re.fullmatch(r"(weight|tensor)_[0-9]+", path_name)
            ):
                # torch.load(weights_only=False), torch._C._pickle_load_obj or pickle.loads
                yield f"pickle:{folder}/{path_name or fqn}"


# -- the JSON graphs ---------------------------------------------------------------------------


def _graph_operators(program: Any) -> Iterator[str]:
    if not isinstance(program, dict):
        yield "member:models/*.json is not an object"
        return
    guards = program.get("guards_code") or []
    if not isinstance(guards, list) or not all(isinstance(g, str) and _plain_guard(g) for g in guards):
        yield "python:guards_code"  # exec()-ed as Python when the module is built
    yield from _walk(program)


def _walk(value: Any) -> Iterator[str]:
    """Every operator target, custom class and unsafe shape expression anywhere in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if key in ("target", "as_operator") and isinstance(sub, str):
                    yield _operator(sub)
                elif key == "class_fqn" and isinstance(sub, str):
                    yield f"class:{sub}"
                elif key == "expr_str" and isinstance(sub, str) and not _plain_sympy(sub):
                    yield f"sympy:{sub[:60]}"
                elif key in ("as_string", "as_strings") and not all(map(_plain_string, _strings(sub))):
                    # a constant string input becomes "L[...] == '<value>'" in the generated guard code
                    yield "python:quoted string constant"
                else:
                    stack.append(sub)


def _operator(target: str) -> str:
    match = _OP_TARGET.fullmatch(target)
    return f"{match[1]}::{match[2]}" if match else target


def _strings(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _plain_string(value: Any) -> bool:
    return isinstance(value, str) and not any(c in value for c in "'\"\\\n\r")


def _plain_guard(code: str) -> bool:
    """A guard torch.export wrote: comparisons of input sizes and constants (``L['x'].size()[0] == 3``).

    Strings are identifiers only: torch edits the guard as text (``L['x']`` -> ``args[0]``) and
    pastes it inside a quoted message before ``exec``, so a quote in one would end that message.
    """
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            ok = node.id in ("L", "math")
        elif isinstance(node, ast.Constant):
            ok = not isinstance(node.value, str) or node.value.isidentifier()
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "math":
                ok = node.attr in _MATH_NAMES
            else:
                ok = node.attr in _TENSOR_METHODS and isinstance(node.value, (ast.Name, ast.Subscript))
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Attribute) and not node.keywords
        else:
            ok = isinstance(node, (*_SYMPY_NODES, ast.Subscript))
        if not ok:
            return False
    return True


@lru_cache(maxsize=4096)  # a graph repeats the same few shape expressions on every node
def _plain_sympy(expr: str) -> bool:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _SYMPY_NODES):
            return False
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            return False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
            return False
        if isinstance(node, ast.keyword) and (node.arg is None or not isinstance(node.value, ast.Constant)):
            return False
    return True


# -- the sample-inputs pickle ------------------------------------------------------------------


def _sample_input_globals(data: bytes, inner: str) -> Iterator[str]:
    """What the sample-inputs pickle imports, found with pickletools without unpickling it.

    torch.export.load unpickles it with ``weights_only=True`` and, when that fails, again without:
    so every global it names must be one that rebuilds a tensor.
    """
    if not data:
        return
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.namelist()
            bad = [m for m in members if not _TORCH_SAVE_MEMBER.fullmatch(_inner(m))]
            pickles = [m for m in members if _inner(m) == "data.pkl"]
            if bad or len(pickles) != 1 or len(set(members)) != len(members):
                yield f"pickle:{inner}"
                return
            payload = z.read(pickles[0])
    except zipfile.BadZipFile:
        yield f"pickle:{inner}"  # the legacy format: several pickles read with the full unpickler
        return
    for name in _pickle_globals(payload):
        if name is None or not _TENSOR_GLOBALS.fullmatch(name):
            yield f"pickle:{inner}"
            return


def _pickle_globals(payload: bytes) -> Iterator[str | None]:
    """The ``module.name`` of every global a pickle imports; ``None`` for one that cannot be told statically."""
    memo: dict[int, str | None] = {}
    recent: list[str | None] = []  # what the last stack-changing opcodes pushed (strings, else None)
    try:
        for op, arg, _ in pickletools.genops(payload):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _sep, attr = str(arg).partition(" ")
                yield f"{module}.{attr}"
                recent.append(None)
            elif name == "STACK_GLOBAL":
                module_name, attr_name = recent[-2:] if len(recent) >= 2 else [None, None]
                yield f"{module_name}.{attr_name}" if module_name and attr_name else None
                recent.append(None)
            elif name in ("EXT1", "EXT2", "EXT4", "OBJ"):
                yield None  # a global from copyreg's registry, or a class taken from the stack
            elif name in _MEMO_PUT:
                memo[arg if isinstance(arg, int) else len(memo)] = recent[-1] if recent else None  # MEMOIZE: no arg
            elif name in _MEMO_GET:
                recent.append(memo.get(arg) if isinstance(arg, int) else None)
            elif name in _STRING_OPS:
                recent.append(arg if isinstance(arg, str) else None)
            elif name not in ("PROTO", "FRAME"):
                recent.append(None)
    except ValueError:  # a truncated or malformed pickle
        yield None
