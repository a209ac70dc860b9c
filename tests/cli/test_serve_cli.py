"""``aimass serve`` argument parsing (the server itself runs as a subprocess in tests/backends/test_remote.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
import pytest
import typer
from typer.testing import CliRunner

from aimass.cli import COMMANDS
from aimass.cli.options import parse_duration, parse_size


def test_serve_is_registered() -> None:
    assert "aimass.cli.serve" in COMMANDS


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("500us", 0.0005), ("2ms", 0.002), ("0.01", 0.01), ("1s", 1.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [("64MiB", 64 << 20), ("10MB", 10_000_000), ("4096", 4096), ("1kib", 1024)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["soon", "-1ms", "5 parsecs"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)
    with pytest.raises(typer.BadParameter):
        parse_size(text)


def test_limits_reach_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import aimass.server as server
    from aimass.cli import app

    pytest.importorskip("onnxruntime")
    captured: dict[str, Any] = {}
    real_create_app = server.create_app

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.update(kwargs)
        return real_create_app(*args, **kwargs)

    monkeypatch.setattr(server, "create_app", spy)
    monkeypatch.setattr(server, "serve", lambda *a, **k: None)  # parse and build, do not listen
    model = models.onnx_mlp(tmp_path / "mlp.onnx")
    args = ["serve", str(model), "--max-queue-size", "8", "--request-timeout", "250ms", "--max-elements", "1000"]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    assert captured["max_queue_size"] == 8
    assert captured["request_timeout"] == pytest.approx(0.25)
    assert captured["max_elements"] == 1000
