"""Disk full during save, on a real full file system: a tiny tmpfs mounted for the test (needs root
and mount rights; skipped otherwise; the simulated ENOSPC case is in test_package.py and always runs).

The failed save raises the file system's own ENOSPC error, leaves the old package intact and
loadable, and leaves no temporary directory behind; once space is back the same save succeeds.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model
from aimass.package import verify


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tinyfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_save_keeps_the_old_version(tiny_fs: Path, tmp_path: Path) -> None:
    small = Model.load(models.onnx_mlp(tmp_path / "small.onnx", hidden=8))
    big = Model.load(models.onnx_mlp(tmp_path / "big.onnx", hidden=8192))  # ~230 KB of weights
    target = small.save(tiny_fs / "pkg")
    x = np.ones((2, 4), np.float32)
    expected = small.predict(x)["y"]
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (free - 64 * 1024))  # 64 KiB left: the big model cannot fit

    with pytest.raises(OSError) as info:
        big.save(target, overwrite=True)
    assert info.value.errno == errno.ENOSPC, info.value
    assert "No space left on device" in str(info.value)
    verify(target)  # checksums of the old version still hold
    np.testing.assert_array_equal(Model.load(target).predict(x)["y"], expected)
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler", "pkg"]  # no half-written temp directory

    filler.unlink()
    big.save(target, overwrite=True)
    np.testing.assert_array_equal(Model.load(target).predict(x)["y"], big.predict(x)["y"])
