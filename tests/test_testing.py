"""aimass.testing: a backend registered by a third party runs the same conformance suite as aimass's own.

The backend here is what a third-party package would write: a NumPy linear model (``y = x @ weight +
bias``) with its own file format, registered with :func:`aimass.backends.register` under a test-only
name for this module and removed afterwards, and a ``Test...`` subclass of the suite with its cases.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from aimass import Model, plugins
from aimass.backends import get_backend, register
from aimass.backends.base import Backend
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError
from aimass.schema import DType, Schema, TensorSpec
from aimass.testing import BackendConformance, Case

BACKEND_NAME = "numpy-linear-test"


class LinearModel:
    """The third party's model object: ``y = x @ weight + bias``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = weight
        self.bias = bias

    @classmethod
    def random(cls, n_in: int = 4, n_out: int = 3, seed: int = 0) -> LinearModel:
        rng = np.random.default_rng(seed)
        return cls(rng.standard_normal((n_in, n_out)), rng.standard_normal(n_out))

    def save(self, path: Path) -> Path:
        np.savez(path, weight=self.weight, bias=self.bias)
        return path

    @classmethod
    def read(cls, path: Path) -> LinearModel:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["weight"], f["bias"])


class LinearBackend(Backend):
    """The third party's backend: LinearModel objects and ``.linear.npz`` files, FP32 in and out."""

    name: ClassVar[str] = BACKEND_NAME
    framework: ClassVar[str] = "numpy"
    extra: ClassVar[str] = "numpy-linear"
    suffixes: ClassVar[tuple[str, ...]] = (".linear.npz",)
    type_modules: ClassVar[tuple[str, ...]] = (LinearModel.__module__,)

    def __init__(self, model: LinearModel, schema: Schema | None) -> None:
        self.weight = np.asarray(model.weight, dtype=np.float32)
        self.bias = np.asarray(model.bias, dtype=np.float32)
        n_in, n_out = self.weight.shape
        self.schema = schema or Schema(
            inputs=[TensorSpec(name="x", dtype=DType.FP32, shape=[-1, n_in])],
            outputs=[TensorSpec(name="y", dtype=DType.FP32, shape=[-1, n_out])],
        )

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> LinearBackend:
        if split_device(device)[0] != "cpu":
            raise DeviceError(f"the {cls.name} backend runs on the CPU only; got device {device!r}")
        if isinstance(source, LinearModel):
            return cls(source, schema)
        try:
            return cls(LinearModel.read(Path(source)), schema)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"cannot read linear model {Path(source).name!r}: {e}") from e

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] @ self.weight + self.bias}

    def save(self, directory: Path) -> list[str]:
        LinearModel(self.weight, self.bias).save(directory / "model.linear.npz")
        return ["model.linear.npz"]


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    """The backend is known to aimass while this module's tests run, and forgotten afterwards."""
    assert BACKEND_NAME not in plugins.keys(plugins.BACKEND)
    register(BACKEND_NAME, f"{__name__}:LinearBackend")
    try:
        yield
    finally:
        plugins.unregister(plugins.BACKEND, BACKEND_NAME)


# --- the third party's cases: its model built two ways; the reference is plain NumPy on the same weights ---


def _from_file(tmp: Path) -> Model:
    return Model.load(LinearModel.random().save(tmp / "m.linear.npz"))  # detected by suffix


def _from_object(tmp: Path) -> Model:
    LinearModel.random(seed=1).save(tmp / "m.linear.npz")  # for the reference
    return Model.load(LinearModel.read(tmp / "m.linear.npz"))  # detected by the object's module


def _numpy_reference(tmp: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    m = LinearModel.read(tmp / "m.linear.npz")
    y = np.einsum("bi,io->bo", inputs["x"].astype(np.float64), m.weight) + m.bias
    return {"y": y.astype(np.float32)}


class TestThirdPartyBackend(BackendConformance):
    cases: ClassVar[list[Case]] = [
        Case("numpy-linear-file", _from_file, "numpy", reference=_numpy_reference),
        Case("numpy-linear-object", _from_object, "numpy", reference=_numpy_reference),
    ]

    def test_the_case_runs_on_the_registered_backend(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        assert model.backend_name == BACKEND_NAME
        assert isinstance(model.backend, get_backend(BACKEND_NAME))


class TestCaseFixtureOverridden(BackendConformance):
    """The other way in, as with fsspec's abstract tests: the subclass provides the ``case`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls) -> Case:
        return Case("numpy-linear-fixture", _from_file, "numpy", reference=_numpy_reference)


def test_import_aimass_imports_neither_aimass_testing_nor_pytest() -> None:
    code = (
        "import sys, aimass\n"
        "from aimass import Model, Schema\n"
        "print(sorted(m for m in ('aimass.testing', 'pytest') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_public_names() -> None:
    import aimass.testing

    assert aimass.testing.__all__ == ["Arrays", "BackendConformance", "Case", "run_in_threads"]
    # The base class is not collected by itself: only subclasses named Test... run.
    assert not BackendConformance.__name__.startswith("Test")
