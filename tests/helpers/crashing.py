"""A backend that aborts its process on a chosen input: a native crash inside a model, on demand.

It is the onnx backend (real onnxruntime compute) with one difference: a row whose first value is
:data:`CRASH_VALUE` calls ``os.abort()``, as a segfaulting framework would kill the process: no
exception, no cleanup. Worker processes learn it with :func:`register` (``serve_workers(setup=...)``).

Example:
    >>> register(); pkg = save_crashing(models.onnx_mlp(tmp / "m.onnx"), tmp / "pkg")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass import Model
from aimass.backends import register as register_backend
from aimass.frameworks.onnx.backend import OnnxBackend

CRASH_VALUE = 666.0
NAME = "crashing_onnx"


class CrashingOnnxBackend(OnnxBackend):
    """onnxruntime, except that an input row starting with CRASH_VALUE aborts the process."""

    name: ClassVar[str] = NAME

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.run  # the onnx backend picks its fastest run() per instance

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            first = next(iter(inputs.values()))
            if first.size and bool(np.any(first.reshape(len(first), -1)[:, 0] == CRASH_VALUE)):
                os.abort()
            return inner(inputs)

        self.run = run  # type: ignore[method-assign]


def register() -> None:
    """Make the backend known in this process (a worker's ``setup``)."""
    register_backend(NAME, f"{__name__}:CrashingOnnxBackend")


def save_crashing(onnx_file: Path, directory: Path) -> Path:
    """A package of ``onnx_file`` served by the crashing backend."""
    register()
    model = Model(CrashingOnnxBackend.load(onnx_file))
    return Path(model.save(directory))
