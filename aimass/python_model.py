"""Python models: your pre- and post-processing around other Models, served like any Model.

Subclass :class:`PythonModel`, declare a ``schema`` (inputs and outputs may be BYTES, for text
and encoded files), load what you need in ``setup(context)`` and answer in ``predict(inputs)``.
``Model.load(MyModel(), artifacts={...})`` wraps it on the ``python`` backend; everything a Model
does then works: ``predict`` with a ``list[str]``, ``predict_batch``, ``save``/``load``, the
library, serving with dynamic batching, remote calls and composition.

Artifacts are files, directories and Models. A Model (or a framework object, an aimass package, or
a file a backend recognises by its suffix, such as ``enc.onnx``; ``.json`` files stay files) is
loaded by aimass on its own backend, so an ONNX encoder inside still runs on onnxruntime.

A saved package holds::

    python.json              the class, its code files and its artifacts
    code/<module>.py         the module the class lives in, plus the declared extra ``code``
    artifacts/<name>/...     files and directories as given; Models as nested packages

Every file is checksummed by the package manifest. Loading a package runs its code, so it needs
``Model.load(path, trust_code=True)`` (``aimass serve --trust-code``; the backend option
``trust_code``); without it :class:`~aimass.errors.UntrustedCode` names the code files. Nothing is
pickled: the instance is re-created by importing the saved module and calling the class with no
arguments, then ``setup`` runs again, so state belongs in artifacts, not in ``__init__`` arguments.

Example:
    >>> import numpy as np
    >>> from aimass import Model, PythonModel
    >>> from aimass.schema import as_text
    >>> class Shout(PythonModel):
    ...     schema = {"inputs": [{"name": "text", "dtype": "BYTES", "shape": [-1]}],
    ...               "outputs": [{"name": "loud", "dtype": "BYTES", "shape": [-1]}]}
    ...     def predict(self, inputs):
    ...         return {"loud": [t.upper() + "!" for t in as_text(inputs["text"], "text")]}
    >>> Model.load(Shout()).predict(["hello", "world"])["loud"].tolist()
    ['HELLO!', 'WORLD!']
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from aimass.backends import detect
from aimass.backends.base import Backend
from aimass.errors import (
    AimassError,
    BackendNotFound,
    IntegrityError,
    ModelLoadError,
    PredictionError,
    UnsupportedOperation,
    UntrustedCode,
)
from aimass.files import read_json
from aimass.model import Model
from aimass.package import checksummed_names, is_package, member, sha256_file
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["Context", "PythonBackend", "PythonModel"]

SPEC_FILE = "python.json"
CODE_DIR = "code"
ARTIFACTS_DIR = "artifacts"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_IMPORT_LOCK = threading.Lock()  # sys.path is process-wide: one package's code imports at a time


class PythonModel:
    """Base class of models written in Python: declare ``schema``, write ``setup`` and ``predict``.

    * ``schema``: a :class:`~aimass.schema.Schema` or its dict form; BYTES tensors carry text and
      encoded files (``predict`` receives them as object arrays of ``bytes``; decode text with
      :func:`aimass.schema.as_text`, which refuses invalid UTF-8 with a typed error).
    * ``code``: extra code files or directories to package with the class's module, relative to
      that module's directory; they are importable by their own names while the module loads.
    * ``setup(context)``: called once after construction (and again after loading or moving to
      another device) with the artifacts; load tokenizers, label lists and Models here.
    * ``predict(inputs)``: ``{input name: ndarray}`` -> ``{output name: array-like}``; BYTES
      outputs may be ``str`` or ``bytes``, numbers are cast to the declared dtype.

    The class is re-created with no arguments when a package is loaded.

    Example:
        >>> class Doubler(PythonModel):
        ...     schema = {"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 2]}],
        ...               "outputs": [{"name": "y", "dtype": "FP32", "shape": [-1, 2]}]}
        ...     def predict(self, inputs):
        ...         return {"y": inputs["x"] * 2}
        >>> Model.load(Doubler()).predict([[1.0, 2.0]])["y"].tolist()
        [[2.0, 4.0]]
    """

    schema: ClassVar[Schema | Mapping[str, Any]]
    code: ClassVar[Sequence[str | os.PathLike[str]]] = ()

    def setup(self, context: Context) -> None:
        """Load what ``predict`` needs from ``context`` (artifacts, device); the default does nothing."""

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        """``{input name: ndarray}`` (validated against ``schema``) -> ``{output name: array-like}``."""
        raise NotImplementedError(f"{type(self).__qualname__} must define predict(self, inputs)")


@dataclasses.dataclass(frozen=True)
class Context:
    """What ``PythonModel.setup`` receives: artifacts (files, directories, Models) and the device.

    Example:
        >>> def setup(self, context):                                    # doctest: +SKIP
        ...     self.encoder = context.model("encoder")                  # a Model (e.g. on onnxruntime)
        ...     self.labels = context.path("labels").read_text().split()
    """

    artifacts: Mapping[str, Path | Model]
    device: str = "cpu"

    def path(self, name: str) -> Path:
        """The file or directory given as artifact ``name``."""
        value = self._get(name)
        if not isinstance(value, Path):
            raise TypeError(f"artifact {name!r} is a Model, not a file: use context.model({name!r})")
        return value

    def model(self, name: str) -> Model:
        """The Model given as artifact ``name``, loaded on its own backend."""
        value = self._get(name)
        if not isinstance(value, Model):
            raise TypeError(f"artifact {name!r} is a file or directory, not a Model: use context.path({name!r})")
        return value

    def _get(self, name: str) -> Path | Model:
        try:
            return self.artifacts[name]
        except KeyError:
            raise KeyError(f"no artifact {name!r}; artifacts are {sorted(self.artifacts)}") from None


# -- wrapping ---------------------------------------------------------------------------------------


def _is_model_path(path: Path) -> bool:
    if is_package(path):
        return True
    if not path.is_file() or path.suffix.lower() == ".json":  # JSON is data here (labels, configs)
        return False
    try:
        detect(path)
    except BackendNotFound:
        return False
    return True


def _resolve(name: str, value: Any, device: str) -> Path | Model:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"artifact name {name!r}: use letters, digits, '_', '.' and '-' (it names a directory)")
    if isinstance(value, Model):
        return value if value.device == device else value.to(device)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.exists():
            raise ModelLoadError(f"artifact {name!r}: no such file or directory {path.name!r}")
        return Model.load(path, device=device) if _is_model_path(path) else path.absolute()
    return Model.load(value, device=device)  # a framework object


def _schema(cls: type[PythonModel], given: Schema | None) -> Schema:
    if given is not None:
        return given
    declared = getattr(cls, "schema", None)
    if declared is None:
        raise ModelLoadError(f"{cls.__qualname__} declares no schema: set the class attribute `schema`")
    return declared if isinstance(declared, Schema) else Schema.model_validate(declared)


def _output(value: Any, spec: TensorSpec, owner: str) -> np.ndarray:
    if spec.dtype is DType.BYTES:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
        return arr if arr.dtype == object else arr.astype(object)
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        raise PredictionError(f"{owner}: output {spec.name!r} holds {arr.dtype} values, the schema says {spec.dtype}")
    return arr.astype(spec.dtype.numpy, copy=False)


# -- code files --------------------------------------------------------------------------------------


def _code_files(cls: type[PythonModel]) -> tuple[str, dict[str, Path]]:
    """``(module name, {package-relative code path: source})`` for saving ``cls``."""
    if "<locals>" in cls.__qualname__:
        raise UnsupportedOperation(
            f"class {cls.__qualname__} is defined inside a function: define it at the top of a module to save it"
        )
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or not str(file).endswith(".py"):
        raise UnsupportedOperation(
            f"class {cls.__qualname__} lives in {cls.__module__!r}, which has no .py file (a notebook or the "
            "interpreter): move it into a .py module to save it"
        )
    source = Path(file)
    name = source.stem if cls.__module__ == "__main__" else cls.__module__.rsplit(".", 1)[-1]
    files = {f"{CODE_DIR}/{name}.py": source}
    for extra in getattr(cls, "code", ()):
        path = Path(extra) if Path(extra).is_absolute() else source.parent / extra
        if not path.exists():
            raise ModelLoadError(f"{cls.__qualname__}.code names {str(extra)!r}, which does not exist")
        rel = f"{CODE_DIR}/{path.name}"
        if rel in files:
            raise ModelLoadError(f"{cls.__qualname__}.code: two code files are named {path.name!r}")
        files[rel] = path
    return name, files


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copyfile(source, target)


def _files_under(root: Path, rel: str) -> list[str]:
    base = root / rel
    if base.is_file():
        return [rel]
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())


@contextmanager
def _importable(directory: Path, unique: str) -> Iterator[None]:
    """``directory`` importable by plain names while a package's module loads, and only then.

    Its extra code files (``import features``) must not reuse a same-named module that another
    package, or the application, loaded before, nor leave theirs behind for the next package: names
    they would take are set aside first, and what this import adds from ``directory`` moves under
    ``unique`` afterwards (the loaded module keeps its references to it).
    """
    local = {p.stem for p in directory.glob("*.py")} | {p.name for p in directory.iterdir() if p.is_dir()}
    aside = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in local}
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))
        for name in set(sys.modules) - before:
            if name.split(".")[0] in local:
                sys.modules[f"{unique}.{name}"] = sys.modules.pop(name)
        sys.modules.update(aside)


@contextmanager
def _no_bytecode() -> Iterator[None]:
    # No __pycache__ written into the package: it would be a file its checksums do not cover.
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def _import_class(root: Path, module: str, qualname: str, where: str) -> type[PythonModel]:
    if not _MODULE.match(module):
        raise IntegrityError(f"{where}: {SPEC_FILE} names module {module!r}, which is not a Python module name")
    main = member(root, f"{CODE_DIR}/{module}.py", where)
    # Named by content: loading the same code twice reuses the module; different code never collides
    # with it, nor with a module of the same name that this process imported from elsewhere.
    code = main.parent
    digest = hashlib.sha256()
    for path in sorted(p for p in code.rglob("*") if p.is_file()):  # the extra code counts too
        digest.update(f"{path.relative_to(code).as_posix()}\0{sha256_file(path)}\0".encode())
    unique = f"aimass_code_{digest.hexdigest()[:16]}_{module}"
    with _IMPORT_LOCK:
        loaded: ModuleType | None = sys.modules.get(unique)
        if loaded is None:
            spec = importlib.util.spec_from_file_location(unique, main)
            if spec is None or spec.loader is None:
                raise ModelLoadError(f"{where}: cannot import {CODE_DIR}/{module}.py")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[unique] = loaded
            try:
                with _importable(code, unique), _no_bytecode():
                    spec.loader.exec_module(loaded)
            except Exception as e:
                del sys.modules[unique]
                raise ModelLoadError(f"{where}: its code {CODE_DIR}/{module}.py failed to import: {e!r}") from e
    obj: Any = loaded
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, PythonModel)):
        raise ModelLoadError(f"{where}: {CODE_DIR}/{module}.py defines no PythonModel class {qualname!r}")
    return obj


# -- the backend ------------------------------------------------------------------------------------


class PythonBackend(Backend):
    """Runs a :class:`PythonModel`; saved as ``python.json`` + ``code/`` + ``artifacts/``."""

    name: ClassVar[str] = "python"
    framework: ClassVar[str] = "aimass"
    extra: ClassVar[str] = "all"

    def __init__(
        self,
        model: PythonModel,
        artifacts: Mapping[str, Path | Model],
        *,
        device: str,
        schema: Schema,
        code: tuple[str, dict[str, Path]] | None = None,
    ) -> None:
        self.model = model
        self.artifacts = dict(artifacts)
        self.device = device
        self.schema = schema
        self._code = code  # (module, files) once loaded from a package; read from the class when saving
        self._owner = f"python model {type(model).__qualname__}"
        model.setup(Context(self.artifacts, device))

    @classmethod
    def accepts(cls, source: Any) -> bool:
        return isinstance(source, PythonModel)

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> PythonBackend:
        options = options or {}
        if isinstance(source, PythonModel):
            given = options.get("artifacts") or {}
            if not isinstance(given, Mapping):
                raise TypeError(f"artifacts must be a mapping of name -> file, directory or Model, got {given!r}")
            artifacts = {name: _resolve(name, value, device) for name, value in given.items()}
            return cls(source, artifacts, device=device, schema=_schema(type(source), schema))
        if isinstance(source, type) and issubclass(source, PythonModel):
            raise TypeError(f"pass an instance, Model.load({source.__qualname__}()), not the class")
        return cls._load_saved(Path(source), device, schema, bool(options.get("trust_code")))

    @classmethod
    def _load_saved(cls, path: Path, device: str, schema: Schema | None, trusted: bool) -> PythonBackend:
        if path.is_dir():
            path = path / SPEC_FILE
        root = path.parent
        prefix, covered = checksummed_names(root)
        where = f"package {(root.name if not prefix else prefix.rstrip('/'))!r}"
        spec = read_json(path, IntegrityError, where=f"{where}: {SPEC_FILE}")
        ok = (
            isinstance(spec, dict)
            and isinstance(spec.get("module"), str)
            and isinstance(spec.get("class"), str)
            and isinstance(spec.get("code"), list)
            and isinstance(spec.get("artifacts"), dict)
            and isinstance(spec.get("files"), list)
        )
        if not ok:
            raise IntegrityError(f"{where}: {SPEC_FILE} lacks module, class, code, artifacts or files")
        code = [str(c) for c in spec["code"]]
        if not trusted:
            raise UntrustedCode(
                f"{where} holds Python code that runs when it is loaded: {', '.join(prefix + c for c in code)} "
                f"(class {spec['module']}.{spec['class']}). Load it only if you trust where it comes from: "
                "Model.load(..., trust_code=True), --trust-code on the aimass command (serve, info, predict ...), "
                "or the backend option trust_code=true",
                files=[prefix + c for c in code],
            )
        # Every file under code/ may be imported (it is on sys.path while the module loads), and a
        # __pycache__ file would run in place of its checksummed source: all must be covered.
        for rel in [SPEC_FILE, f"{CODE_DIR}/{spec['module']}.py", *spec["files"], *_files_under(root, CODE_DIR)]:
            member(root, str(rel), where)  # relative, inside, no links
            if rel not in covered:
                raise IntegrityError(f"{where}: file {prefix + str(rel)!r} is not covered by the package's checksums")
        klass = _import_class(root, spec["module"], spec["class"], where)
        artifacts: dict[str, Path | Model] = {}
        for name, entry in spec["artifacts"].items():
            if not (isinstance(entry, dict) and entry.get("kind") in ("file", "dir", "model")):
                raise IntegrityError(f"{where}: artifact {name!r} has no kind file, dir or model in {SPEC_FILE}")
            target = member(root, str(entry.get("path")), where)
            if entry["kind"] == "model":
                artifacts[name] = Model.load(target, device=device, options={"trust_code": True})
            else:
                artifacts[name] = target
        files = {c: member(root, c, where) for c in code}
        try:
            instance = klass()
        except TypeError as e:
            raise ModelLoadError(f"{where}: {klass.__qualname__}() needs no arguments to be re-created ({e})") from e
        return cls(instance, artifacts, device=device, schema=_schema(klass, schema), code=(spec["module"], files))

    # -- running --------------------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self.model.predict(inputs)
        except AimassError:
            raise
        except Exception as e:  # user code: any failure is this model's prediction error
            raise PredictionError(f"{self._owner} failed: {type(e).__name__}: {e}") from e
        if not isinstance(out, Mapping):
            raise PredictionError(f"{self._owner}: predict returned {type(out).__name__}, not a dict of outputs")
        missing = [n for n in self.schema.output_names if n not in out]
        if missing:
            raise PredictionError(f"{self._owner}: predict returned no {missing[0]!r}; it returned {sorted(out)}")
        return {spec.name: _output(out[spec.name], spec, self._owner) for spec in self.schema.outputs}

    def to(self, device: str) -> PythonBackend:
        if device == self.device:
            return self
        moved = {k: v.to(device) if isinstance(v, Model) else v for k, v in self.artifacts.items()}
        return PythonBackend(type(self.model)(), moved, device=device, schema=self.schema, code=self._code)

    # -- saving ---------------------------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        module, code = self._code or _code_files(type(self.model))
        for rel, source in code.items():
            _copy(source, directory / rel)
        entries: dict[str, dict[str, str]] = {}
        for name, value in self.artifacts.items():
            base = f"{ARTIFACTS_DIR}/{name}"
            if isinstance(value, Model):
                value.save(directory / base)
                entries[name] = {"kind": "model", "path": base}
            elif value.is_dir():
                _copy(value, directory / base)
                entries[name] = {"kind": "dir", "path": base}
            else:
                _copy(value, directory / base / value.name)
                entries[name] = {"kind": "file", "path": f"{base}/{value.name}"}
        files = [f for rel in code for f in _files_under(directory, rel)]
        files += [f for name in entries for f in _files_under(directory, f"{ARTIFACTS_DIR}/{name}")]
        spec = {
            "module": module,
            "class": type(self.model).__qualname__,
            "code": sorted(code),
            "artifacts": entries,
            "files": files,
        }
        (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        return [SPEC_FILE, *files]
