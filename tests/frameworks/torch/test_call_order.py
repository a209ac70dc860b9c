"""The torch backend calls forward() in its parameter order, whatever order the schema lists inputs in."""

from __future__ import annotations

import numpy as np
import pytest

from aimass import Model, Schema, TensorSpec

torch = pytest.importorskip("torch")


class _Affine(torch.nn.Module):  # type: ignore[misc]
    """forward(a, b) = 2a - b: swapping the arguments changes the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.scale * a - b


# The schema lists b first: the order a user might well write.
_SCHEMA = Schema(
    inputs=[TensorSpec(name="b", dtype="FP32", shape=[-1, 3]), TensorSpec(name="a", dtype="FP32", shape=[-1, 3])],
    outputs=[TensorSpec(name="output", dtype="FP32", shape=[-1, 3])],
)


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal((4, 3)).astype(np.float32)}


def _expected(x: dict[str, np.ndarray]) -> np.ndarray:
    return 2 * x["a"] - x["b"]


def test_load_calls_forward_in_parameter_order() -> None:
    x = _inputs()
    m = Model.load(_Affine(), schema=_SCHEMA)
    np.testing.assert_allclose(m.predict(x)["output"], _expected(x), rtol=1e-6)


def test_backends_built_by_other_paths_keep_the_order() -> None:
    from aimass.frameworks.torch.backend import TorchBackend

    x = _inputs()
    m = Model.load(_Affine(), schema=_SCHEMA)
    backend = TorchBackend.of(m)
    # The constructor path that to(), update() and compress() take.
    rebuilt = TorchBackend(backend.module, backend.schema, "cpu", None)
    np.testing.assert_allclose(rebuilt.run(x)["output"], _expected(x), rtol=1e-6)
    compressed = m.compress("bf16", data=x, repeats=0)
    np.testing.assert_allclose(compressed.predict(x)["output"], _expected(x), atol=0.1)


def test_update_keeps_the_order() -> None:
    x = _inputs()
    m = Model.load(_Affine(), schema=_SCHEMA)
    y = _expected(x)
    updated = m.update(x, y, epochs=1, learning_rate=1e-9, batch_size=4, progress=False)
    # A learning rate of 1e-9 leaves the weights as they were: the answer must not move.
    np.testing.assert_allclose(updated.predict(x)["output"], y, atol=1e-4)
