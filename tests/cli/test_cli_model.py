"""`aimass info | predict | bench`, through the real typer app: every input format, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import models
import numpy as np
import pytest
from typer.testing import CliRunner

from aimass import Model
from aimass.cli import app

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app(), list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    models.xgb_classifier(3).get_booster().save_model(str(tmp / "clf.json"))
    two = models.onnx_two_inputs(tmp / "two.onnx")
    x, _ = models.dataset(5)
    np.save(tmp / "x.npy", x)
    np.savetxt(tmp / "x.csv", x, delimiter=",", header="a,b,c,d", comments="")
    (tmp / "x.json").write_text(json.dumps(x.tolist()))
    np.savez(tmp / "two.npz", x=x, scale=np.arange(5).reshape(5, 1))
    (tmp / "bad.json").write_text(json.dumps([[1.0, 2.0]]))
    return {"clf": tmp / "clf.json", "two": two, "dir": tmp}


def test_info(files: dict[str, Path]) -> None:
    code, out, _ = cli("info", str(files["clf"]))
    assert code == 0 and "backend  xgboost" in out and "FP32 [-1, 4]" in out
    code, out, _ = cli("info", str(files["two"]), "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)["schema"]["inputs"]] == ["x", "scale"]


@pytest.mark.parametrize("suffix", ["npy", "csv", "json"])
def test_predict_input_formats(files: dict[str, Path], suffix: str) -> None:
    x, _ = models.dataset(5)
    want = Model.load(files["clf"]).predict(x)
    code, out, _ = cli("predict", str(files["clf"]), "--data", str(files["dir"] / f"x.{suffix}"), "--json")
    assert code == 0
    got = json.loads(out)
    np.testing.assert_allclose(np.asarray(got["probabilities"]), want["probabilities"], rtol=1e-6)
    assert got["label"] == want["label"].tolist()


def test_predict_json_is_one_compact_document(files: dict[str, Path]) -> None:
    code, out, _ = cli("predict", str(files["two"]), "--data", str(files["dir"] / "two.npz"), "--json")
    # One line: what --output out.json writes, not one number per line (5 rows x 4 columns were 26 lines).
    assert code == 0 and out.count("\n") == 1 and out.startswith('{"y":[['), out
    out_file = files["dir"] / "out.json"
    assert cli("predict", str(files["two"]), "--data", str(files["dir"] / "two.npz"), "-o", str(out_file))[0] == 0
    assert json.loads(out) == json.loads(out_file.read_text(encoding="utf-8"))


def test_predict_table_npz_and_output_file(files: dict[str, Path]) -> None:
    out_file = files["dir"] / "out.npz"
    code, out, _ = cli("predict", str(files["two"]), "--data", str(files["dir"] / "two.npz"), "-o", str(out_file))
    assert code == 0 and out.splitlines()[0].split() == ["row", "y"] and len(out.splitlines()) == 6
    x, _ = models.dataset(5)
    with np.load(out_file) as z:
        np.testing.assert_allclose(z["y"], x * np.arange(5).reshape(5, 1), rtol=1e-6)


def test_predict_errors_exit_2(files: dict[str, Path]) -> None:
    code, _, err = cli("predict", str(files["clf"]), "--data", str(files["dir"] / "bad.json"))
    assert code == 2 and "input 'input': expected FP32 shape [-1, 4]" in err
    code, _, err = cli("predict", str(files["clf"]), "--data", str(files["dir"] / "missing.npy"))
    assert code == 2 and "no such input file" in err
    code, _, err = cli("predict", str(files["dir"] / "nope.onnx"), "--data", str(files["dir"] / "x.npy"))
    assert code == 2 and "no such model" in err
    code, _, _ = cli("predict", str(files["clf"]))  # --data is required: a usage error
    assert code == 2


def test_bench(files: dict[str, Path]) -> None:
    code, out, _ = cli("bench", str(files["clf"]), "--batch-size", "1,4", "--seconds", "0.05", "--json")
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["batch"] for r in results] == [1, 4]
    assert all(r["calls"] >= 3 and r["p50_ms"] > 0 and r["rows_per_s"] > 0 for r in results)
    code, out, _ = cli("bench", str(files["clf"]), "--batch-size", "2", "--seconds", "0.05")
    assert code == 0 and out.splitlines()[1].split() == ["batch", "calls", "p50_ms", "p99_ms", "rows_per_s"]
    code, _, err = cli("bench", str(files["clf"]), "--batch-size", "x")
    assert code == 2 and "--batch-size" in err
