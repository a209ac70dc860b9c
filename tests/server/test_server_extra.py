"""Without the [server] extra, every way into the server names the extra (not a bare ModuleNotFoundError).

Each case blocks one package in a fresh interpreter, as tests/test_imports.py does for frameworks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aimass.server.extra import SERVER_PACKAGES


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("module", sorted(SERVER_PACKAGES))
def test_aimass_serve_without_the_extra_names_it(module: str, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    proc = _run(
        f"""
        import sys
        sys.modules[{module!r}] = None  # as if not installed
        sys.argv = ["aimass", "serve", "models/", "--port", "0"]
        from aimass.cli import main
        main()
        """,
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"error: the aimass server needs {SERVER_PACKAGES[module]}: "), proc.stderr
    assert "pip install 'aimass[server]'" in proc.stderr
    assert "Traceback" not in proc.stderr and "serving" not in proc.stdout


@pytest.mark.parametrize("entry", ["from aimass.server import create_app", "import aimass.server.deadlines"])
def test_python_entry_points_raise_missing_dependency(entry: str, tmp_path: Path) -> None:
    proc = _run(
        f"""
        import sys
        sys.modules["orjson"] = None
        from aimass import MissingDependency
        try:
            {entry}
        except MissingDependency as e:
            print(type(e).__name__, e.extra, e.package)
        """,
        tmp_path,
    )
    assert proc.stdout.strip() == "MissingDependency server orjson", proc.stderr


def test_yaml_config_without_pyyaml_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "aimass.yaml").write_text("models: {}\n", encoding="utf-8")
    proc = _run(
        """
        import sys
        sys.modules["yaml"] = None
        from aimass import MissingDependency
        from aimass.config import load_config
        try:
            load_config("aimass.yaml")
        except MissingDependency as e:
            print(e)
        """,
        tmp_path,
    )
    assert proc.stdout.startswith("a YAML config file needs pyyaml: pip install 'aimass[server]'"), proc.stderr


@pytest.mark.parametrize(
    ("url", "extra"), [("http://127.0.0.1:1/v2/models/x", "server"), ("grpc://127.0.0.1:1/x", "grpc")]
)
def test_remote_clients_without_orjson_name_their_extra(url: str, extra: str, tmp_path: Path) -> None:
    # The V2 codec both clients share imports orjson: without it, the extra, not ModuleNotFoundError.
    proc = _run(
        f"""
        import sys
        sys.modules["orjson"] = None
        from aimass import Model, MissingDependency
        try:
            Model.load({url!r})
        except MissingDependency as e:
            print(type(e).__name__, e.extra, e.package)
        """,
        tmp_path,
    )
    assert proc.stdout.strip() == f"MissingDependency {extra} orjson", proc.stderr
