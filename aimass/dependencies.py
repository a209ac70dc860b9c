"""Optional dependencies: import one when a feature needs it, or say which extra installs it.

aimass's core needs numpy, pydantic, tqdm and typer only; every framework and tool is an extra.
:func:`require` is the one place that turns a missing import into a typed error naming the
feature that needed it and the extra to install.

Example:
    >>> np_ = require("numpy", feature="the demo", extra="demo")
    >>> require("no_such_module", feature="the model library", extra="store")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aimass.errors.MissingDependency: the model library needs no_such_module: pip install 'aimass[store]' ...
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import Any

from aimass.errors import BackendUnavailable, MissingDependency

__all__ = ["distribution_version", "import_target", "require", "require_framework"]


def require(module: str, *, feature: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature`` ("the model library"), or raise MissingDependency naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(feature, package or module.split(".")[0], extra, detail=str(e)) from e


def require_framework(module: str, *, backend: str, extra: str, package: str | None = None) -> ModuleType:
    """:func:`require` for a backend's framework: raises BackendUnavailable ("the torch backend needs torch")."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(backend, package or module.split(".")[0], extra, detail=str(e)) from e


def import_target(target: str) -> Any:
    """The object a registry entry ``"package.module:attr"`` names, importing its module on first use.

    Every table of dotted paths (backends, compressors, exporters, trainers) resolves through here.

    Example:
        >>> import_target("aimass.errors:SchemaError").__name__
        'SchemaError'
    """
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def distribution_version(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it (None when it is not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
