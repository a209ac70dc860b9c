"""Backends by name: the backend table of :mod:`aimass.plugins`, imported only when chosen.

Each framework declares its backends in its manifest (``aimass/frameworks/<name>/plugin.py``, or an
installed distribution's ``aimass.frameworks`` entry point); :func:`register` adds one in code.
Detection never imports a framework that is not already needed: objects are matched by the
modules of their classes, paths by suffix, in the manifests' detection order. Backend modules
themselves import their framework lazily (inside ``load``), so even importing a backend class is
cheap.

Example:
    >>> from aimass.backends import detect, get_backend
    >>> detect("model.onnx").name
    'onnx'
    >>> get_backend("xgboost").extra
    'xgboost'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimass import plugins
from aimass.errors import BackendNotFound

if TYPE_CHECKING:
    from aimass.backends.base import Backend

__all__ = ["detect", "get_backend", "register", "served_remotely"]


def register(name: str, target: str | type[Backend]) -> None:
    """Register (or replace) a backend as ``"package.module:ClassName"`` (or the class itself).

    A new name is tried last in detection; a replaced one keeps its place.

    Example:
        >>> register("onnx", "aimass.frameworks.onnx.backend:OnnxBackend")
    """
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"backend target must look like 'module:Class', got {target!r}")
    plugins.register(plugins.BACKEND, name, target)


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (imports its module, not its framework)."""
    try:
        return plugins.lookup(plugins.BACKEND, name)
    except KeyError:
        known = sorted(plugins.keys(plugins.BACKEND))
        raise BackendNotFound(f"no backend named {name!r}; known backends: {known}") from None


def served_remotely(source: Any) -> bool:
    """Whether ``source`` is a model server's URL: its backend owns the device (``Backend.owns_device``).

    Example:
        >>> served_remotely("grpc://mass:8001/fraud"), served_remotely("model.onnx")
        (True, False)
    """
    if not (isinstance(source, str) and "://" in source):
        return False
    try:
        return detect(source).owns_device
    except BackendNotFound:
        return False


def detect(source: Any) -> type[Backend]:
    """The backend class for an object or a file path.

    Raises :class:`~aimass.errors.BackendNotFound` when no backend recognises ``source``.
    """
    names = plugins.keys(plugins.BACKEND)
    for name in names:
        klass = get_backend(name)
        if klass.accepts(source):
            return klass
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        what = f"directory {Path(source).name!r} (it is not an aimass package either: no aimass.json)"
    elif isinstance(source, (str, Path)):
        # Name only: messages may travel to remote clients, which must not learn server paths.
        what = f"file {Path(source).name!r} (suffix {Path(source).suffix or 'none'!r})"
    else:
        what = f"object of type {type(source).__module__}.{type(source).__qualname__}"
    raise BackendNotFound(f"no backend recognises {what}; known backends: {sorted(names)}")
