"""``aimass serve`` says what it serves only once it can: a busy port is an error (exit 1) before any
"serving" line, ``--port 0`` prints the port it got, and an empty repository or a package inside a
numbered directory is served with a warning instead of in silence."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import pytest
from typer.testing import CliRunner

import aimass.server
from aimass import Model
from aimass.cli import app
from aimass.cli.output import FAILURE

pytest.importorskip("onnxruntime")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What ``aimass serve`` hands the server (which does not run: the test only parses and binds)."""
    captured: dict[str, Any] = {}

    def run(app: Any, **kwargs: Any) -> None:
        captured.update(kwargs, app=app, bound=kwargs["sock"].getsockname()[1])

    monkeypatch.setattr(aimass.server, "serve", run)
    yield captured


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app(), ["serve", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_busy_port_is_an_error_before_any_serving_line(tmp_path: Path, served: dict[str, Any]) -> None:
    model = models.onnx_mlp(tmp_path / "mlp.onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = invoke(str(model), "--port", str(port))
    assert code == FAILURE, err
    assert "serving" not in out and served == {}
    assert err.strip() == (
        f"error: cannot listen on 127.0.0.1:{port} (HTTP): address already in use; another process listens there: "
        "stop it or pick another port"
    )


def test_port_0_prints_the_port_it_got(tmp_path: Path, served: dict[str, Any]) -> None:
    code, out, err = invoke(str(models.onnx_mlp(tmp_path / "mlp.onnx")), "--port", "0")
    assert code == 0, err
    printed = re.search(r"on http://127\.0\.0\.1:(\d+)/v2", out)
    assert printed is not None, out
    assert int(printed.group(1)) == served["bound"] == served["port"] > 0


def test_an_empty_repository_is_served_with_a_warning(tmp_path: Path, served: dict[str, Any]) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = invoke(str(tmp_path / "empty"), "--port", "0")
    assert code == 0
    assert err.startswith("warning: nothing to serve: ") and "holds no model package" in err
    assert "aimass serving []" in out


def test_a_package_in_a_numbered_directory_is_served_with_a_warning(tmp_path: Path, served: dict[str, Any]) -> None:
    Model.load(models.onnx_mlp(tmp_path / "mlp.onnx")).save(tmp_path / "moderation" / "1")
    code, out, err = invoke(str(tmp_path / "moderation"), "--port", "0")
    assert code == 0
    assert "served as models named '1', not as versions of 'moderation'" in err
    assert "aimass serve moderation=" in err
    assert "aimass serving ['1']" in out


def test_a_repository_in_the_right_layout_has_no_warning(tmp_path: Path, served: dict[str, Any]) -> None:
    Model.load(models.onnx_mlp(tmp_path / "mlp.onnx")).save(tmp_path / "repo" / "moderation" / "1")
    code, out, err = invoke(str(tmp_path / "repo"), "--port", "0")
    assert code == 0 and err == ""
    assert "aimass serving ['moderation']" in out
