"""The library flow end to end: examples/library_flow.py as a script, and the example notebook executed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["AIMASS_STORE"] = str(tmp_path / "lib")
    env["AIMASS_CACHE"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_library_flow_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library_flow.py")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "published fraud:1 -> production" in out
    assert "served over V2: same answers as the local model" in out
    assert "drifted: input[0]" in out
    assert "refused:" in out and "fails its gate" in out
    assert out.rstrip().endswith("production is fraud:2")
    versions = sorted(p.name for p in (tmp_path / "lib" / "fraud").iterdir() if p.name.isdigit())
    assert versions == ["1", "2", "3"]
    aliases = json.loads((tmp_path / "lib" / "fraud" / "aliases.json").read_text())
    assert aliases["aliases"]["production"] == {"2": 1.0}


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    pytest.importorskip("nbconvert")
    pytest.importorskip("ipykernel")
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=300",
            "--output",
            str(out),
            str(ROOT / "examples" / "notebook.ipynb"),
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    outputs = [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    joined = "".join("".join(h) if isinstance(h, list) else h for h in html)
    for needle in ("<b>Evaluation</b>", "<b>Monitor</b>", "<b>Model</b>", "production"):
        assert needle in joined, needle
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the drift report's plot
