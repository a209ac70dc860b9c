"""``aimass scale`` registration and argument parsing (exit codes and options: test_cli_contract.py; the Ray
paths run in tests/scale/test_ray_cli.py)."""

from __future__ import annotations

from aimass.cli import COMMANDS
from aimass.cli.scale import model_sources


def test_scale_is_registered() -> None:
    assert "aimass.cli.scale" in COMMANDS


def test_model_sources() -> None:
    assert model_sources(["mlp.onnx", "fraud=pkg/fraud", "pkgs/churn"]) == {
        "mlp": "mlp.onnx",
        "fraud": "pkg/fraud",
        "churn": "pkgs/churn",
    }
