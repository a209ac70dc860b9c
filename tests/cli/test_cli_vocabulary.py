"""One CLI vocabulary: a word means one thing in every command, help says it plainly, every command
that loads a model takes --trust-code, and failures do not look like success (a library root that
does not exist, a canary shown as one version, a closed pipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import typer
from python_models import Scaled
from typer.testing import CliRunner

import aimass
from aimass import Model
from aimass.cli import app, commands
from aimass.cli.output import USER_ERROR

pytest.importorskip("onnxruntime")

LOADING = [("info",), ("predict",), ("bench",), ("compress",), ("convert",), ("store", "publish"), ("serve",)]


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app(), list(args), terminal_width=200)
    return result.exit_code, result.stdout, result.stderr


def command(*path: str) -> Any:
    found: Any = typer.main.get_command(app())
    for name in path:
        found = found.commands[name]
    return found


def every_command() -> list[tuple[str, Any]]:
    return [(name, command(*name.split())) for name, info in commands(app()) if not info.hidden]


def test_version() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out == f"aimass {aimass.__version__}\n"


def test_one_meaning_per_short_option_and_no_former_name_in_help() -> None:
    meanings: dict[str, set[str]] = defaultdict(set)
    for name, cmd in every_command():
        for p in (p for p in cmd.params if p.param_type_name == "option"):
            longs = [o for o in p.opts if o.startswith("--")]
            for short in (o for o in p.opts if not o.startswith("--")):
                meanings[short].add(longs[0])
            if not p.hidden:
                assert not set(p.opts) & {"--input", "--batch", "--token", "--out"}, (name, p.opts)
    assert {k: v for k, v in meanings.items() if len(v) > 1} == {}
    assert meanings["-m"] == {"--method"}


def test_the_same_words_in_every_command() -> None:
    opts = {name: {o for p in cmd.params for o in p.opts if not p.hidden} for name, cmd in every_command()}
    assert "--auth-token" in opts["serve"] and "--auth-token" in opts["ui"]
    assert {"--data", "--batch-size", "--output"} <= opts["predict"]
    assert {"--data", "--output"} <= opts["compress"] and {"--data", "--output"} <= opts["convert"]
    assert "--batch-size" in opts["bench"]


@pytest.mark.parametrize("path", [("serve",), ("scale", "deploy"), ("compress",), ("store", "rm")])
def test_help_is_plain(path: tuple[str, ...]) -> None:
    code, out, _ = cli(*path, "--help")
    assert code == 0
    assert "<bool>" not in out and "``" not in out
    if path == ("serve",):
        assert "needs [otel]" in out  # not eaten as rich markup
        assert "Ray" not in out


@pytest.mark.parametrize("path", LOADING)
def test_every_command_that_loads_a_model_takes_trust_code(path: tuple[str, ...]) -> None:
    flags = {o for p in command(*path).params for o in [*p.opts, *p.secondary_opts]}
    assert "--trust-code" in flags and "--no-trust-code" not in flags


def test_trust_code_loads_a_package_with_python_code(tmp_path: Path) -> None:
    (tmp_path / "scale.txt").write_text("1 2 3 4")
    artifacts = {"scale": tmp_path / "scale.txt", "mlp": models.onnx_mlp(tmp_path / "mlp.onnx")}
    Model.load(Scaled(), artifacts=artifacts).save(tmp_path / "scaled")
    code, _, err = cli("info", str(tmp_path / "scaled"))
    assert code == USER_ERROR and "--trust-code" in err and "aimass serve" not in err
    code, out, err = cli("info", str(tmp_path / "scaled"), "--trust-code")
    assert code == 0, err
    assert "python" in out


def test_former_names_still_work_with_a_warning(tmp_path: Path) -> None:
    model = models.onnx_mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    code, out, err = cli("predict", str(model), "--input", str(tmp_path / "x.npy"), "--json")
    assert code == 0 and err == "warning: --input is deprecated: use --data\n" and out.startswith('{"y":')
    code, _, err = cli("predict", str(model), "--input", "a.npy", "--data", "b.npy")
    assert code == USER_ERROR and "give --data only" in err
    code, _, err = cli("bench", str(model), "--batch", "1", "--seconds", "0.01", "--json")
    assert code == 0 and err == "warning: --batch is deprecated: use --batch-size\n"


def test_store_list_of_a_missing_root_is_an_error(tmp_path: Path) -> None:
    code, out, err = cli("store", "list", "--root", str(tmp_path / "modles"))
    assert code == USER_ERROR and out == ""
    assert err.startswith("error: no model library at ") and "does not exist" in err


def test_store_show_of_a_canary_prints_every_version_with_its_weight(tmp_path: Path) -> None:
    root = str(tmp_path / "lib")
    model = str(models.onnx_mlp(tmp_path / "mlp.onnx"))
    for _ in range(2):
        assert cli("store", "publish", model, "fraud", "--root", root)[0] == 0
    assert cli("store", "alias", "fraud", "production", "1=0.9", "2=0.1", "--root", root)[0] == 0
    for _ in range(3):  # the same every time: not a version drawn by weight
        code, out, _ = cli("store", "show", "fraud@production", "--root", root)
        assert code == 0
        assert out.splitlines()[0] == "fraud@production -> version 1 (90%), version 2 (10%)"
        assert "fraud version 1 " in out and "fraud version 2 " in out
    code, out, _ = cli("store", "show", "fraud@production", "--root", root, "--json")
    shown = json.loads(out)
    assert [(v["version"], v["weight"]) for v in shown["versions"]] == [
        (1, pytest.approx(0.9)),
        (2, pytest.approx(0.1)),
    ]
    code, _, err = cli("store", "rm", "fraud:1", "--root", root)
    assert code == USER_ERROR and "aimass store rm --force" in err and "force=True" in err


def test_a_closed_pipe_ends_quietly() -> None:
    """``aimass ... | head -1``: the reader goes away before the command writes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimass", "alerts", "rules"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and err == ""


def test_ui_takes_auth_token_and_its_former_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import aimass.server
    import aimass.server.dashboard

    seen: dict[str, Any] = {}
    monkeypatch.delenv("AIMASS_SERVER_TOKEN", raising=False)
    monkeypatch.setattr(aimass.server.dashboard, "ui_app", lambda store, **kw: seen.update(kw))
    monkeypatch.setattr(aimass.server, "serve", lambda app, **kw: seen.update(port=kw["port"]))
    code, out, err = cli("ui", str(tmp_path), "--auth-token", "s3cret", "--port", "0")
    assert code == 0 and err == "" and seen["token"] == "s3cret"
    assert f":{seen['port']}/" in out and seen["port"] > 0  # the port it got, not :0
    code, _, err = cli("ui", str(tmp_path), "--token", "old", "--port", "0")
    assert code == 0 and err == "warning: --token is deprecated: use --auth-token\n" and seen["token"] == "old"
