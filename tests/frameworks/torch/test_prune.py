"""Pruning: unstructured zeroes weights without shrinking files; structured removes neurons and shrinks them."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest
from compress_checks import assert_drift_is_real, saved_size

from aimass import Model, UnsupportedOperation

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return models.dataset(128, seed=5)[0]


def test_unstructured_zeroes_weights_but_not_size(x: np.ndarray, tmp_path: Path) -> None:
    net = models.torch_mlp(hidden=64)
    m = Model.load(net, example_input={"x": x[:4]})
    p = m.compress("prune", amount=0.5, data=x, repeats=2)
    pruned = p.backend.module
    for name in ("fc1", "fc2"):
        w = getattr(pruned, name).weight
        assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
        assert not hasattr(getattr(pruned, name), "weight_orig")  # pruning was made permanent
        assert float((getattr(net, name).weight == 0).float().mean()) == 0.0  # original untouched
    r = p.report
    assert r.settings["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert r.size_after == saved_size(p, tmp_path / "p") and r.size_before == saved_size(m, tmp_path / "m")
    assert r.size_ratio == pytest.approx(1.0, abs=0.03)  # dense storage keeps every zero
    assert any("size and latency stay the same" in n for n in r.notes)
    assert_drift_is_real(m, p, x, "output")


def test_structured_shrinks_layers_and_matches_masked_original(x: np.ndarray, tmp_path: Path) -> None:
    net = models.torch_mlp(hidden=512)
    m = Model.load(net, example_input={"x": x[:4]})
    p = m.compress("prune-structured", amount=0.75, data=x, repeats=2)
    small = p.backend.module
    assert (small.fc1.out_features, small.fc2.in_features) == (128, 128)
    assert net.fc1.out_features == 512
    r = p.report
    assert r.size_after == saved_size(p, tmp_path / "p") and r.size_before == saved_size(m, tmp_path / "m")
    assert r.size_ratio > 1.5  # 4099 -> 1027 weights, plus the fixed overhead of the saved program
    # Independently: keep the 128 neurons of highest ||W1 row|| * ||W2 column||, zero the rest in the
    # original network; it must compute exactly what the shrunk one does.
    masked = models.torch_mlp(hidden=512)  # the same seed: the same weights as net
    with torch.no_grad():
        score = net.fc1.weight.norm(dim=1) * net.fc2.weight.norm(dim=0)
        drop = torch.topk(score, 512 - 128, largest=False).indices
        masked.fc1.weight[drop] = 0
        masked.fc1.bias[drop] = 0
        want = masked(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p.predict(x)["output"], want, rtol=1e-5, atol=1e-5)
    assert_drift_is_real(m, p, x, "output")


def test_structured_follows_chains_and_activations(x: np.ndarray) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 64), torch.nn.GELU(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)
    )
    m = Model.load(net, example_input={"input": x[:4]})
    p = m.compress("prune-structured", amount=0.5, data=x, repeats=0)
    layers = [mod for mod in p.backend.module if isinstance(mod, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in layers] == [(4, 32), (32, 16), (16, 3)]
    assert p.predict(x)["output"].shape == (len(x), 3)


def test_pruning_refuses_what_it_cannot_do(x: np.ndarray, tmp_path: Path) -> None:
    onnx_model = Model.load(models.onnx_mlp(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedOperation, match="torch"):
        onnx_model.compress("prune")
    single = Model.load(torch.nn.Sequential(torch.nn.Linear(4, 3)), example_input={"input": x[:2]})
    with pytest.raises(UnsupportedOperation, match="no pair"):
        single.compress("prune-structured")
    with pytest.raises(ValueError, match="between 0 and 1"):
        single.compress("prune", amount=1.5)
