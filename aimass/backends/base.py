"""The contract every backend implements.

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
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from aimass.dependencies import distribution_version
from aimass.device import split_device
from aimass.errors import DeviceError, UnsupportedOperation
from aimass.schema import Schema

__all__ = ["Backend", "Derived", "no_unknown_options"]


class Backend(abc.ABC):
    """One loaded model of one framework.

    Class attributes drive detection without importing the framework: ``suffixes`` for files,
    ``type_modules`` (prefixes of ``type(obj).__module__`` along the MRO) for objects.
    ``owns_device`` is True for a backend whose model runs elsewhere (a model server): the device
    is that server's business, so :class:`aimass.Model` never checks for a local one.
    """

    name: ClassVar[str]
    framework: ClassVar[str]  # the pip distribution whose version the manifest records
    extra: ClassVar[str]  # the aimass extra that installs it
    suffixes: ClassVar[tuple[str, ...]] = ()
    type_modules: ClassVar[tuple[str, ...]] = ()
    owns_device: ClassVar[bool] = False

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

    @classmethod
    def of(cls, model: Any) -> Self:
        """The ``cls`` backend behind ``model`` (a Model or a backend), typed; the one way features reach it.

        Framework code calls ``TorchBackend.of(model).module`` instead of reading attributes of an
        untyped backend; anything else raises UnsupportedOperation naming both backends.

        Example:
            >>> from aimass.frameworks.onnx.backend import OnnxBackend
            >>> OnnxBackend.of(Model.load("mlp.onnx")).model_bytes[:4]   # doctest: +SKIP
            b'\x08\x08\x12\x07'
        """
        backend = getattr(model, "backend", model)
        if not isinstance(backend, cls):
            got = getattr(backend, "name", type(backend).__name__)
            raise UnsupportedOperation(f"this needs a model on the {cls.name} backend; this one runs on {got}")
        return backend

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
        return distribution_version(self.framework)


@dataclasses.dataclass
class Derived:
    """A backend that a framework's tool derived from another (quantized, pruned, exported, trained).

    ``settings`` records what the tool chose (recipes, thresholds), ``notes`` what a user should
    know; features such as ``compress`` wrap ``backend`` in a new Model and put both in its report.
    """

    backend: Backend
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def no_unknown_options(unknown: Mapping[str, Any]) -> None:
    """Refuse options a tool does not take, so a typo never passes silently.

    Example:
        >>> no_unknown_options({})
    """
    if unknown:
        raise TypeError(f"unknown option(s) for this method: {sorted(unknown)}")
