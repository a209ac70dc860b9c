"""The contract every backend implements, and the guarded import of its framework.

A backend wraps one loaded model of one framework. It is created by :meth:`Backend.load`
(from an in-memory object or a file/directory path), exposes a :class:`~aimass.schema.Schema`,
runs already-validated ``dict[str, np.ndarray]`` inputs, moves to a device and saves its
artifacts. Input validation is *not* the backend's job: :class:`aimass.Model` does it once.

Example (a new backend, in outline)::

    class MyBackend(Backend):
        name = "mine"
        framework = "mylib"
        extra = "mine"
        suffixes = (".mine",)
        type_modules = ("mylib.",)

        @classmethod
        def load(cls, source, *, device="cpu", schema=None, example_input=None, options=None): ...
        def run(self, inputs): ...
        def save(self, directory): ...
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from aimass.errors import BackendUnavailable, DeviceError
from aimass.schema import Schema

__all__ = ["Backend", "framework_version", "require", "split_device"]


def require(module: str, *, backend: str, extra: str, package: str | None = None) -> ModuleType:
    """Import a framework module, or raise BackendUnavailable naming the extra to install.

    Example:
        >>> np_ = require("numpy", backend="demo", extra="demo")
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(backend, package or module.split(".")[0], extra, detail=str(e)) from e


def framework_version(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def split_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``.

    Example:
        >>> split_device("cuda:1")
        ('cuda', 1)
    """
    kind, _, index = device.partition(":")
    kind = kind.lower()
    if kind == "gpu":
        kind = "cuda"
    if kind not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    try:
        return kind, int(index) if index else 0
    except ValueError:
        raise DeviceError(f"unknown device {device!r}: the index after ':' must be an integer") from None


class Backend(abc.ABC):
    """One loaded model of one framework.

    Class attributes drive detection without importing the framework: ``suffixes`` for files,
    ``type_modules`` (prefixes of ``type(obj).__module__`` along the MRO) for objects.
    """

    name: ClassVar[str]
    framework: ClassVar[str]  # the pip distribution whose version the manifest records
    extra: ClassVar[str]  # the aimass extra that installs it
    suffixes: ClassVar[tuple[str, ...]] = ()
    type_modules: ClassVar[tuple[str, ...]] = ()

    schema: Schema
    device: str = "cpu"

    # -- detection ---------------------------------------------------------------------------

    @classmethod
    def accepts(cls, source: Any) -> bool:
        """Cheap check whether ``source`` (object or path) is for this backend; imports nothing."""
        if isinstance(source, (str, Path)):
            name = str(source).lower()
            return any(name.endswith(s) for s in cls.suffixes)
        return any((getattr(k, "__module__", "") or "").startswith(cls.type_modules) for k in type(source).__mro__)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> Backend:
        """Wrap an object or load a file/directory written by this framework (or by :meth:`save`)."""

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated inputs (names and dtypes already match the schema); outputs in schema order."""

    @abc.abstractmethod
    def save(self, directory: Path) -> list[str]:
        """Write artifacts into ``directory``; return their file names, the loadable one first."""

    def to(self, device: str) -> Backend:
        """A backend on ``device``; the default supports the CPU only."""
        kind, _ = split_device(device)
        if kind != "cpu":
            raise DeviceError(f"the {self.name} backend runs on the CPU only; got device {device!r}")
        return self

    @property
    def version(self) -> str | None:
        """Version of the framework this backend runs on."""
        return framework_version(self.framework)
