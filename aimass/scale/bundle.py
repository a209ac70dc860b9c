"""Models shipped to Ray workers as package bytes, never as pickled framework objects.

A :class:`Bundle` holds the files of an aimass package (:mod:`aimass.package`). It travels through
Ray's object store to replicas and actors on any node of a cluster, where :meth:`Bundle.load`
writes it to a private temporary directory, loads it with :meth:`Model.load` (which verifies every
checksum before a framework reads a byte) and removes the directory. Sources Ray workers can open by themselves
(``http://`` V2 URLs) travel as strings; model-library references are resolved where
:func:`bundle` runs, so workers need no access to the library.

Example:
    >>> b = bundle(Model.load("mlp.onnx"))         # doctest: +SKIP
    >>> b.load().predict(rows)                      # on any Ray worker  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aimass.backends import served_remotely
from aimass.errors import ModelLoadError
from aimass.package import is_package

__all__ = ["Bundle", "ModelSource", "bundle", "load_source"]


@dataclasses.dataclass(frozen=True)
class Bundle:
    """The files of one aimass package: relative POSIX path -> bytes."""

    name: str
    files: Mapping[str, bytes]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())

    def load(self, options: Mapping[str, Any] | None = None) -> Any:
        """Write the package to a fresh temporary directory and load it (checksums verified)."""
        from aimass.model import Model

        tmp = Path(tempfile.mkdtemp(prefix="aimass-bundle-"))
        root = tmp / self.name
        try:
            for rel, data in self.files.items():
                target = root / rel
                if not target.resolve().is_relative_to(root.resolve()):
                    raise ModelLoadError(f"bundle of {self.name!r}: file {rel!r} leaves the package directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            return Model.load(root, options=options)
        finally:
            # Backends hold a loaded model in memory (an mmapped file survives its unlink on POSIX), and
            # Ray may kill replicas and actors without running exit hooks: remove the copy now.
            shutil.rmtree(tmp, ignore_errors=True)


# What a Ray worker receives: a bundle, or a V2 URL it opens itself.
ModelSource = Bundle | str


def bundle(source: Any, *, name: str | None = None, options: Mapping[str, Any] | None = None) -> ModelSource:
    """A source Ray workers can load: packages and model files become bytes, Models are saved first.

    Model servers' URLs (``http(s)://``, ``grpc(s)://``) stay strings: each worker opens them itself.

    Example:
        >>> bundle("packages/fraud")            # doctest: +SKIP
        Bundle(name='fraud', files={...})
    """
    from aimass.model import Model

    if served_remotely(source):
        return source
    if isinstance(source, (str, os.PathLike)) and is_package(source):
        return _read_package(Path(source), name or Path(source).name)
    model = source if isinstance(source, Model) else Model.load(source, options=options)
    with tempfile.TemporaryDirectory(prefix="aimass-bundle-") as tmp:
        path = model.save(Path(tmp) / "pkg")
        return _read_package(path, name or model.name or "model")


def _read_package(root: Path, name: str) -> Bundle:
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return Bundle(name=name, files=files)


def load_source(source: ModelSource, options: Mapping[str, Any] | None = None) -> Any:
    """The Model for a :data:`ModelSource`, on the worker that calls this."""
    from aimass.model import Model

    if isinstance(source, Bundle):
        return source.load(options)
    return Model.load(source, options=options)
