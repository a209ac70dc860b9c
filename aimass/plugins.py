"""Frameworks as plug-ins: one manifest per framework, one typed registry for every table of tools.

A framework says what it offers in one :class:`FrameworkPlugin` of ``"module:attr"`` strings: its
backends, compressors, exporters and importers, optimizers, trainers, distillers and shrinkers.
aimass's own manifests are ``aimass/backends/plugin.py`` and ``aimass/frameworks/<name>/plugin.py``
(every framework folder has one; the folders are found on disk, no list to edit); a framework in
its own distribution names its manifest in the ``aimass.frameworks`` entry-point group::

    [project.entry-points."aimass.frameworks"]
    linear = "aimass_linear.plugin:PLUGIN"

The registry reads the manifests on the first lookup, not at ``import aimass``, and imports an entry
only when a feature picks it, so declaring a framework imports no framework. Each kind of entry is
a :class:`Kind` whose value type is a ``Protocol`` below: :func:`lookup` returns that type and
:func:`register` takes it, so mypy checks the call a feature makes and a callable registered in
code. An entry point never replaces an entry already taken (aimass's own come first): it is skipped
with a warning; :func:`register` replaces on purpose.

Example:
    >>> from aimass import plugins
    >>> plugins.entries(plugins.TRAINER)["xgboost"]
    'aimass.frameworks.xgboost.train:train'
    >>> plugins.keys(plugins.BACKEND)[:3]
    ['python', 'onnx', 'transformers']
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pkgutil
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from aimass.dependencies import import_target

if TYPE_CHECKING:
    import numpy as np

    from aimass.backends.base import Backend, Derived
    from aimass.schema import Schema

__all__ = [
    "BACKEND",
    "COMPRESSOR",
    "COMPRESS_HINT",
    "CONVERT_HINT",
    "Compressor",
    "DISTILLER",
    "Distiller",
    "ENTRY_POINT_GROUP",
    "EXPORTER",
    "Exporter",
    "FrameworkPlugin",
    "IMPORTER",
    "Importer",
    "KINDS",
    "Kind",
    "OPTIMIZER",
    "Optimizer",
    "Registry",
    "SHRINKER",
    "Shrinker",
    "TRAINER",
    "Trainer",
    "WRAPPED_COMPRESSOR",
    "WrappedCompressor",
    "entries",
    "keys",
    "lookup",
    "refresh",
    "register",
    "registry",
    "unregister",
]

ENTRY_POINT_GROUP = "aimass.frameworks"

# Detection tries backends in rank order, lower first; a backend without a rank comes after all of
# aimass's own (which use 0..130), so a plug-in never shadows a built-in detection by accident.
DEFAULT_RANK = 1000

K = TypeVar("K")
T = TypeVar("T")


# -- what each kind of entry is called with ---------------------------------------------------------


class Compressor(Protocol):
    """``compress(m, method)``: a backend's quantizer or pruner; ``data`` may be None (no calibration)."""

    def __call__(self, backend: Backend, /, *, data: Any, **options: Any) -> Derived: ...


class WrappedCompressor(Protocol):
    """A backend holding a network on another backend compresses it with ``tool_for(network)``."""

    def __call__(
        self, backend: Backend, /, *, tool_for: Callable[[Backend], Compressor], data: Any, **options: Any
    ) -> Derived: ...


class Exporter(Protocol):
    """``convert(m, target)``: a Backend of the target, or an artifact the target's :class:`Importer` loads."""

    def __call__(self, backend: Backend, /, **options: Any) -> Any: ...


class Importer(Protocol):
    """An exporter's artifact loaded as a backend answering to the source's ``schema`` names."""

    def __call__(self, artifact: Any, schema: Schema, /) -> Backend: ...


class Optimizer(Protocol):
    """``convert(..., optimize=True)``: the fused graph, or None when nothing could be fused."""

    def __call__(self, backend: Backend, /) -> Derived | None: ...


class Trainer(Protocol):
    """``update(m, data, labels)``: a new backend trained further; the original is not changed."""

    def __call__(
        self,
        backend: Backend,
        inputs: dict[str, np.ndarray],
        labels: np.ndarray,
        /,
        *,
        epochs: int,
        rounds: int,
        learning_rate: float | None,
        batch_size: int,
        loss: str | None,
        progress: bool | None,
        seed: int,
        desc: str,
    ) -> Backend: ...


class Distiller(Protocol):
    """``distill(teacher, student, data)``: the student (native object or backend) trained on ``target``."""

    def __call__(
        self,
        student: Any,
        inputs: dict[str, np.ndarray],
        target: np.ndarray,
        labels: np.ndarray | None,
        kind: str,
        hyper: dict[str, Any],
        seed: int,
        progress: bool | None,
        /,
    ) -> Any: ...


class Shrinker(Protocol):
    """``compress(m, "distill", layers=n)``: a student built from the teacher's own layers, trained on ``target``."""

    def __call__(
        self,
        backend: Backend,
        /,
        *,
        layers: int,
        inputs: dict[str, np.ndarray],
        target: np.ndarray,
        output: str,
        **options: Any,
    ) -> Derived: ...


@dataclasses.dataclass(frozen=True, eq=False)
class Kind(Generic[K, T]):
    """One table: its entries are declared in the :class:`FrameworkPlugin` field ``field``.

    ``resolve=False`` marks tables of plain text (hints), returned as declared.
    """

    field: str
    resolve: bool = True

    def __repr__(self) -> str:
        return f"Kind({self.field!r})"


BACKEND: Kind[str, type[Backend]] = Kind("backends")  # name -> Backend class
COMPRESSOR: Kind[tuple[str, str], Compressor] = Kind("compressors")  # (backend, method)
WRAPPED_COMPRESSOR: Kind[str, WrappedCompressor] = Kind("wrapped")  # backend holding a network
EXPORTER: Kind[tuple[str, str], Exporter] = Kind("exporters")  # (source backend, target format)
IMPORTER: Kind[str, Importer] = Kind("importers")  # target format
OPTIMIZER: Kind[str, Optimizer] = Kind("optimizers")  # target format
TRAINER: Kind[str, Trainer] = Kind("trainers")  # backend
DISTILLER: Kind[str, Distiller] = Kind("distillers")  # the student's detected backend
SHRINKER: Kind[str, Shrinker] = Kind("shrinkers")  # the teacher's backend
COMPRESS_HINT: Kind[str, str] = Kind("compress_hints", resolve=False)  # backend -> why it has no compressor
CONVERT_HINT: Kind[str, str] = Kind("convert_hints", resolve=False)  # target -> why sources are missing

KINDS: tuple[Kind[Any, Any], ...] = (
    BACKEND,
    COMPRESSOR,
    WRAPPED_COMPRESSOR,
    EXPORTER,
    IMPORTER,
    OPTIMIZER,
    TRAINER,
    DISTILLER,
    SHRINKER,
    COMPRESS_HINT,
    CONVERT_HINT,
)


def _table() -> Any:
    return dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FrameworkPlugin:
    """What one framework offers, as ``"module:attr"`` strings: declaring it imports nothing.

    Keys: backends, trainers, distillers, shrinkers and wrapped by backend name; compressors by
    ``(backend, method)``; exporters by ``(source backend, target format)``; importers and
    optimizers by target format. ``detection_rank`` orders detection (lower is tried first) for
    backends whose objects another backend would also accept.

    Example:
        >>> PLUGIN = FrameworkPlugin(
        ...     name="linear",
        ...     backends={"linear": "aimass_linear.backend:LinearBackend"},
        ...     trainers={"linear": "aimass_linear.train:train"},
        ... )
    """

    name: str
    backends: Mapping[str, str] = _table()
    detection_rank: Mapping[str, int] = _table()
    compressors: Mapping[tuple[str, str], str] = _table()
    wrapped: Mapping[str, str] = _table()
    exporters: Mapping[tuple[str, str], str] = _table()
    importers: Mapping[str, str] = _table()
    optimizers: Mapping[str, str] = _table()
    trainers: Mapping[str, str] = _table()
    distillers: Mapping[str, str] = _table()
    shrinkers: Mapping[str, str] = _table()
    compress_hints: Mapping[str, str] = _table()
    convert_hints: Mapping[str, str] = _table()

    def __post_init__(self) -> None:
        for kind in KINDS:
            if not kind.resolve:
                continue
            for key, target in getattr(self, kind.field).items():
                module, colon, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
                if not (module and colon and attr):
                    raise ValueError(
                        f"plug-in {self.name!r}: {kind.field}[{key!r}] must be 'package.module:attr', got {target!r}"
                    )
        unknown = set(self.detection_rank) - set(self.backends)
        if unknown:
            raise ValueError(f"plug-in {self.name!r}: detection_rank names no backend of its own: {sorted(unknown)}")


def builtin_plugins() -> list[FrameworkPlugin]:
    """aimass's own manifests: its core backends, then one per ``aimass/frameworks/<name>/`` folder.

    The folders are listed from disk, so a new framework folder needs no line anywhere else;
    frameworks come in the order of their first backend's detection rank (the tables list them so).
    """
    folder = Path(__file__).parent / "frameworks"
    names = [m.name for m in pkgutil.iter_modules([str(folder)]) if m.ispkg]
    found: list[FrameworkPlugin] = [import_target(f"aimass.frameworks.{n}.plugin:PLUGIN") for n in names]
    found.sort(key=lambda p: min(p.detection_rank.values(), default=DEFAULT_RANK))
    core: FrameworkPlugin = import_target("aimass.backends.plugin:PLUGIN")
    return [core, *found]


def installed_plugins(group: str = ENTRY_POINT_GROUP) -> list[FrameworkPlugin]:
    """The manifests that installed distributions name in ``group``; a broken one is skipped with a warning."""
    found: list[FrameworkPlugin] = []
    for ep in importlib.metadata.entry_points(group=group):
        where = f"entry point {ep.name!r} ({ep.value}) in {group!r}"
        if ep.dist is not None:
            where += f" of the {ep.dist.name} distribution"
        try:
            plugin = ep.load()
        except Exception as e:
            warnings.warn(f"aimass: skipping {where}: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=3)
            continue
        if not isinstance(plugin, FrameworkPlugin):
            warnings.warn(
                f"aimass: skipping {where}: expected an aimass.plugins.FrameworkPlugin, got {type(plugin).__name__}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        found.append(plugin)
    return found


class Registry:
    """Every table of tools, built from manifests on first use; thread-safe.

    ``sources`` returns the manifests (aimass's own first, then installed plug-ins); tests may pass
    their own to get a registry apart from the process-wide :data:`registry`.

    Example:
        >>> r = Registry(lambda: [FrameworkPlugin("demo", trainers={"demo": "aimass.errors:SchemaError"})])
        >>> r.keys(TRAINER)
        ['demo']
    """

    def __init__(self, sources: Callable[[], Iterable[FrameworkPlugin]] | None = None) -> None:
        self._sources = sources or (lambda: [*builtin_plugins(), *installed_plugins()])
        self._lock = threading.RLock()
        self._tables: dict[str, dict[Any, Any]] | None = None
        self._ranks: dict[str, int] = {}
        self._plugins: list[FrameworkPlugin] = []
        # register()/unregister() calls, replayed after refresh() so that they survive a rebuild.
        self._changes: list[tuple[Kind[Any, Any], Any, Any, int | None]] = []

    # -- building -----------------------------------------------------------------------------------

    def _built(self) -> dict[str, dict[Any, Any]]:
        tables = self._tables
        if tables is not None:
            return tables
        with self._lock:
            if self._tables is None:
                self._build()
            assert self._tables is not None
            return self._tables

    def _build(self) -> None:
        tables: dict[str, dict[Any, Any]] = {kind.field: {} for kind in KINDS}
        self._ranks = {}
        self._plugins = []
        for plugin in self._sources():
            self._plugins.append(plugin)
            for kind in KINDS:
                table = tables[kind.field]
                for key, target in getattr(plugin, kind.field).items():
                    if key in table:
                        warnings.warn(
                            f"aimass: plug-in {plugin.name!r} declares {kind.field}[{key!r}], which is taken; "
                            "the first declaration is kept",
                            RuntimeWarning,
                            stacklevel=4,
                        )
                        continue
                    table[key] = target
                    if kind is BACKEND:
                        self._ranks[key] = plugin.detection_rank.get(key, DEFAULT_RANK)
        for kind, key, target, rank in self._changes:
            self._apply(tables, kind, key, target, rank)
        self._sort_backends(tables)
        self._tables = tables

    def _apply(
        self, tables: dict[str, dict[Any, Any]], kind: Kind[Any, Any], key: Any, target: Any, rank: int | None
    ) -> None:
        table = tables[kind.field]
        if target is None:
            table.pop(key, None)
            return
        table[key] = target
        if kind is BACKEND:
            self._ranks[key] = rank if rank is not None else self._ranks.get(key, DEFAULT_RANK)

    def _sort_backends(self, tables: dict[str, dict[Any, Any]]) -> None:
        backends = tables[BACKEND.field]
        order = sorted(backends, key=lambda name: self._ranks.get(name, DEFAULT_RANK))  # stable: ties keep order
        tables[BACKEND.field] = {name: backends[name] for name in order}

    # -- reading ------------------------------------------------------------------------------------

    def entries(self, kind: Kind[K, T]) -> dict[K, str | T]:
        """A copy of one table: key -> ``"module:attr"`` (or the object registered in code), in order."""
        return dict(self._built()[kind.field])

    def keys(self, kind: Kind[K, T]) -> list[K]:
        """The keys of one table, in order (backends: detection order)."""
        return list(self._built()[kind.field])

    def lookup(self, kind: Kind[K, T], key: K) -> T:
        """The entry for ``key``, its module imported now; KeyError when the table has none."""
        target = self._built()[kind.field][key]
        if isinstance(target, str) and kind.resolve:
            return cast("T", import_target(target))
        return cast("T", target)

    def plugins(self) -> list[FrameworkPlugin]:
        """The manifests the tables were built from, aimass's own first."""
        self._built()
        return list(self._plugins)

    # -- changing -----------------------------------------------------------------------------------

    def register(self, kind: Kind[K, T], key: K, target: str | T, *, rank: int | None = None) -> None:
        """Add or replace one entry: a ``"module:attr"`` string, or the object itself.

        ``rank`` places a backend in detection order (default: where it was, else after aimass's own).
        """
        if isinstance(target, str) and kind.resolve and not all(target.partition(":")[::2]):
            raise ValueError(f"{kind.field} target must look like 'package.module:attr', got {target!r}")
        self._change(kind, key, target, rank)

    def unregister(self, kind: Kind[K, T], key: K) -> None:
        """Remove one entry (nothing happens when there is none)."""
        self._change(kind, key, None, None)

    def _change(self, kind: Kind[Any, Any], key: Any, target: Any, rank: int | None) -> None:
        with self._lock:
            self._changes.append((kind, key, target, rank))
            # Copy, change, swap: a thread iterating a table (detection) never sees it change under it.
            tables = {field: dict(table) for field, table in self._built().items()}
            self._apply(tables, kind, key, target, rank)
            self._sort_backends(tables)
            self._tables = tables

    def refresh(self) -> None:
        """Read the manifests again on the next lookup (after installing a distribution in-process)."""
        with self._lock:
            importlib.invalidate_caches()
            self._tables = None


registry = Registry()
"""The process-wide registry that ``Model.load``, ``compress``, ``convert``, ``update`` and ``distill`` use."""


def entries(kind: Kind[K, T]) -> dict[K, str | T]:
    """:meth:`Registry.entries` of the process-wide :data:`registry`."""
    return registry.entries(kind)


def keys(kind: Kind[K, T]) -> list[K]:
    """:meth:`Registry.keys` of the process-wide :data:`registry`."""
    return registry.keys(kind)


def lookup(kind: Kind[K, T], key: K) -> T:
    """:meth:`Registry.lookup` of the process-wide :data:`registry`.

    Example:
        >>> lookup(BACKEND, "onnx").extra
        'onnx'
    """
    return registry.lookup(kind, key)


def register(kind: Kind[K, T], key: K, target: str | T, *, rank: int | None = None) -> None:
    """:meth:`Registry.register` on the process-wide :data:`registry`.

    Example:
        >>> register(TRAINER, "mine", "mylib.aimass_tools:train")   # doctest: +SKIP
    """
    registry.register(kind, key, target, rank=rank)


def unregister(kind: Kind[K, T], key: K) -> None:
    """:meth:`Registry.unregister` on the process-wide :data:`registry`."""
    registry.unregister(kind, key)


def refresh() -> None:
    """:meth:`Registry.refresh` of the process-wide :data:`registry`."""
    registry.refresh()
