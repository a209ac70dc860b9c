"""Where a server's models come from: a repository directory, explicit models, and version aliases.

A repository directory uses Triton's layout, ``<root>/<name>/<version>/``, where each version
directory is an aimass package (:mod:`aimass.package`); the model library writes exactly this
layout, so ``aimass serve <library root>`` serves it. A ``<root>/<name>/`` that is itself a package
is served as version ``1``, and a root that is a package is served as one model. Models can also be
given explicitly (``Model`` objects, files, packages), with or without a directory.

A requested version is resolved here and only here (:meth:`Sources.resolve`): none means the
highest, a number is itself, and a name is a model-library alias (``<root>/<name>/aliases.json``),
drawn by its canary weights.

Example:
    >>> sources = Sources("models/")                           # doctest: +SKIP
    >>> sources.resolve("fraud", "production", ["1", "2"])      # doctest: +SKIP
    '2'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from aimass.errors import ModelLoadError, ModelNotFound
from aimass.model import Model
from aimass.package import is_package, read_manifest
from aimass.server.versions import version_key
from aimass.server.warmup import serving_settings

__all__ = ["Source", "Sources", "latest"]

log = logging.getLogger("aimass.server")

Source = Model | Path
ModelSources = Mapping[str, Model | str | os.PathLike[str] | Mapping[str, Model | str | os.PathLike[str]]]


def latest(versions: Collection[str]) -> str:
    """The highest of ``versions`` (:func:`version_key` order).

    Example:
        >>> latest(["9", "10"])
        '10'
    """
    return max(versions, key=version_key)


def _inside(path: Path, real_root: Path) -> bool:
    """False for a symlink that leads out of the repository root (refused, with a warning)."""
    if not path.is_symlink():
        return True
    if path.resolve().is_relative_to(real_root):
        return True
    log.warning("not serving %s: a symbolic link out of the repository root", path.name)
    return False


class Sources:
    """The models a server can load: a repository directory (rescanned on each :meth:`scan`) and explicit ones.

    ``models`` maps a name to a ``Model`` or a path (model file or package), or to a mapping of
    version -> source; an explicit name replaces the directory's versions of the same number.

    Example:
        >>> Sources(models={"mlp": "mlp.onnx"}).scan()   # doctest: +SKIP
        {'mlp': {'1': PosixPath('mlp.onnx')}}
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, models: ModelSources | None = None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ModelLoadError(f"model repository {str(self.root)!r} is not a directory")
        self.explicit: dict[str, dict[str, Source]] = {}
        for name, src in (models or {}).items():
            versions = src if isinstance(src, Mapping) else {"1": src}
            self.explicit[name] = {str(v): s if isinstance(s, Model) else Path(s) for v, s in versions.items()}
        self._aliases: dict[str, tuple[int, dict[str, dict[int, float]]]] = {}

    def scan(self) -> dict[str, dict[str, Source]]:
        """Every model that can load: name -> version -> source (the directory is read again)."""
        found: dict[str, dict[str, Source]] = {}
        root = self.root
        if root is not None:
            if is_package(root):
                found[root.name] = {"1": root}
            else:
                real_root = root.resolve()
                for d in sorted(root.iterdir()):
                    if not d.is_dir() or d.name.startswith(".") or not _inside(d, real_root):
                        continue
                    if is_package(d):
                        found[d.name] = {"1": d}
                        continue
                    on_disk: dict[str, Source] = {
                        # Hidden entries are a library's unfinished publishes (.staging-*): never served.
                        v.name: v
                        for v in d.iterdir()
                        if v.is_dir() and not v.name.startswith(".") and _inside(v, real_root) and is_package(v)
                    }
                    if on_disk:
                        found[d.name] = on_disk
        for name, explicit in self.explicit.items():
            found.setdefault(name, {}).update(explicit)
        return found

    def versions(self, name: str) -> dict[str, Source]:
        """The versions of ``name`` (version -> source); ModelNotFound naming the models there are."""
        found = self.scan()
        versions = found.get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}; models are {sorted(found)}")
        return versions

    def resolve(self, name: str, version: str | None, versions: Collection[str], what: str = "versions") -> str:
        """The version of ``versions`` a request for ``version`` means: the one place aliases resolve.

        None: the highest; an alias (``aliases.json``) names one by its weights. ``what`` names
        ``versions`` in the ModelNotFound raised when none matches ("versions", "loaded versions").

        Example:
            >>> Sources().resolve("mlp", None, ["1", "2"])
            '2'
        """
        if version is None:
            return latest(versions)
        if version in versions:
            return version
        if not version.isdigit():
            picked = self.alias(name, version)
            if picked is not None and picked in versions:
                return picked
        known = sorted(versions, key=version_key)
        raise ModelNotFound(f"model {name!r} has no version {version!r}; {what} are {known}")

    def alias(self, name: str, alias: str) -> str | None:
        """A model-library alias (``<root>/<name>/aliases.json``) as a version, drawn by canary weight."""
        if self.root is None:
            return None
        file = self.root / name / "aliases.json"
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._aliases.get(name)
        if cached is None or cached[0] != mtime:
            from aimass.store import Store  # only libraries with aliases pay the import

            cached = (mtime, Store(self.root).aliases(name))
            self._aliases[name] = cached
        weights = cached[1].get(alias)
        if not weights:
            return None
        from aimass.store import pick_version

        return str(pick_version(weights))

    def is_pinned(self, name: str, src: Source, names: Collection[str] = ()) -> bool:
        """Whether a version stays loaded: a ``Model`` object, a name in ``names``, or a package that says so.

        A package says so with ``metadata["serving"]["pinned"]`` (:func:`aimass.server.warmup.serving_settings`).
        """
        if isinstance(src, Model) or name in names:
            return True
        if isinstance(src, Path) and is_package(src):
            try:
                return bool(serving_settings(read_manifest(src).metadata).get("pinned", False))
            except ModelLoadError:
                return False  # a broken package fails when it is asked for, with its own error
        return False
