"""`aimass store ...`, command by command, through the real typer app: output, --json, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import models
import pytest
from typer.testing import CliRunner

from aimass.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def clf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clf") / "clf.json"
    models.xgb_classifier(3).get_booster().save_model(str(path))
    return path


@pytest.fixture
def env(tmp_path: Path, clf_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIMASS_STORE", str(tmp_path / "lib"))
    monkeypatch.setenv("AIMASS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(clf_file, tmp_path / "clf.json")
    return tmp_path


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_publish_list_show(env: Path) -> None:
    code, out, _ = cli("store", "publish", "clf.json", "fraud", "--metric", "accuracy=0.95", "-t", "owner=risk")
    assert code == 0 and "published fraud version 1" in out
    code, out, _ = cli("store", "publish", "clf.json", "fraud", "--json")
    assert code == 0 and json.loads(out) == {"name": "fraud", "version": 2, "alias": None}
    code, out, _ = cli("store", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "version", "aliases"] and len(lines) == 3
    code, out, _ = cli("store", "list", "--json")
    assert [r["version"] for r in json.loads(out)] == [1, 2]
    code, out, _ = cli("store", "show", "fraud:1")
    assert code == 0 and "fraud version 1" in out and "accuracy" in out and "owner=risk" in out
    code, out, _ = cli("store", "show", "fraud", "--json")
    assert json.loads(out)["version"] == 2


def test_alias_gate_and_canary(env: Path) -> None:
    cli("store", "publish", "clf.json", "fraud", "--metric", "accuracy=0.95")
    cli("store", "publish", "clf.json", "fraud", "--metric", "accuracy=0.7")
    code, out, _ = cli("store", "alias", "fraud", "production", "1", "--gate", "accuracy=>=0.9", "--store-gate")
    assert code == 0 and "fraud@production -> 1 (100%)" in out
    code, _, err = cli("store", "alias", "fraud", "production", "2")
    assert code == 2 and "fails its gate" in err
    code, out, _ = cli("store", "alias", "fraud", "canary", "1=0.9", "2=0.1", "--json")
    assert code == 0 and json.loads(out)["versions"] == {"1": 0.9, "2": 0.1}
    code, out, _ = cli("store", "show", "fraud@production")
    assert "gate     production: accuracy >=0.9" in out
    code, out, _ = cli("store", "alias", "fraud", "canary", "--delete")
    assert code == 0
    code, _, err = cli("store", "alias", "fraud", "canary")
    assert code == 2 and "no alias" in err


def test_rm_pull_and_user_errors(env: Path) -> None:
    cli("store", "publish", "clf.json", "fraud")
    cli("store", "publish", "clf.json", "fraud", "--alias", "production")
    code, _, err = cli("store", "rm", "fraud:2")
    assert code == 2 and "used by aliases" in err
    code, out, _ = cli("store", "rm", "fraud:1")
    assert code == 0
    code, out, _ = cli("store", "pull", "fraud@production", "--json")
    assert code == 0 and Path(json.loads(out)["path"]).name == "2"
    for args, needle in [
        (("store", "show", "nope"), "no model named"),
        (("store", "show", "fraud:9"), "no version 9"),
        (("store", "publish", "clf.json", "../evil"), "invalid model name"),
        (("store", "publish", "missing.onnx", "fraud"), "no such model"),
        (("store", "publish", "clf.json", "fraud", "--metric", "accuracy"), "key=value"),
        (("store", "rm", "fraud@production"), "version number"),
        (("store", "rm", "fraud:latest"), "version number"),
        (("store", "show", "fraud/3"), "invalid model reference 'fraud/3'"),
        (("store", "pull", "fraud/3"), "invalid model reference 'fraud/3'"),
        (("store", "rm", "fraud/3"), "invalid model reference 'fraud/3'"),
    ]:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert needle in err, (args, err)
    code, out, _ = cli("store", "show", "store://fraud/2", "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    code, _, _ = cli("store", "frobnicate")
    assert code == 2  # typer's own usage error
