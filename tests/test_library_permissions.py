"""Packages and library files get the mode the umask gives (as mkdir and open do), not mkdtemp's private 0700/0600.

A shared model library is readable by the group or everyone when the umask says so, and stays
private under a private umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import models
import pytest

from aimass import Model
from aimass.store import Store

pytest.importorskip("onnxruntime")


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    def set_umask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    try:
        yield set_umask
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize(
    ("mask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640), (0o077, 0o700, 0o600)]
)
def test_library_and_packages_follow_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int, dir_mode: int, file_mode: int
) -> None:
    umask(mask)
    m = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    lib = Store(tmp_path / "lib")
    v = lib.publish(m, "fraud")
    lib.set_alias("fraud", "production", v)
    m.save(tmp_path / "pkg")
    m.save(tmp_path / "pkg", overwrite=True)  # replaced through the same staging
    for root in (tmp_path / "lib", tmp_path / "pkg"):
        modes = _modes(root)
        dirs = {k: v for k, v in modes.items() if (root / k).is_dir()}
        files = {k: v for k, v in modes.items() if (root / k).is_file()}
        assert set(dirs.values()) == {dir_mode}, {k: oct(v) for k, v in dirs.items()}
        assert set(files.values()) == {file_mode}, {k: oct(v) for k, v in files.items()}
        assert files  # aimass.json, model.onnx, aliases ...
    assert any(k.startswith("fraud/1/") for k in _modes(tmp_path / "lib"))
