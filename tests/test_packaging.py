"""Package metadata built from pyproject.toml: numpy < 2 belongs to the mxnet extra only."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def requirements(tmp_path_factory: pytest.TempPathFactory) -> list[Requirement]:
    """``Requires-Dist`` of freshly built metadata (setuptools' PEP 517 hook, in a copy of the project)."""
    src = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    (src / "aimass").mkdir()
    shutil.copy(ROOT / "aimass" / "__init__.py", src / "aimass" / "__init__.py")
    out = tmp_path_factory.mktemp("metadata")
    code = f"from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dist_info = out / proc.stdout.strip().splitlines()[-1]
    metadata = email.parser.Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


def _extras(req: Requirement) -> set[str]:
    marker = str(req.marker) if req.marker else ""
    return {part.split('"')[1] for part in marker.split("extra == ")[1:]}


def _caps_numpy_below_2(req: Requirement) -> bool:
    return req.name == "numpy" and not req.specifier.contains("2.0.0")


def test_numpy_below_2_only_in_the_mxnet_extra(requirements: list[Requirement]) -> None:
    capped = [r for r in requirements if _caps_numpy_below_2(r)]
    assert capped, "the mxnet extra must cap numpy below 2 (mxnet 1.9.1 does not run on numpy 2)"
    assert all(_extras(r) == {"mxnet"} for r in capped), [str(r) for r in capped]
    mxnet = [r for r in requirements if r.name == "mxnet"]
    assert mxnet and all(_extras(r) == {"mxnet"} for r in mxnet)


def test_core_requirements_leave_numpy_2_open(requirements: list[Requirement]) -> None:
    core = [r for r in requirements if r.marker is None or "extra" not in str(r.marker)]
    numpy = [r for r in core if r.name == "numpy"]
    assert numpy, "numpy is a core requirement"
    assert all(r.specifier.contains("2.1.0") for r in numpy), [str(r) for r in numpy]
    assert not any(r.name == "mxnet" for r in core)
