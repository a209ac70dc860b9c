"""aimass.tempfiles: what frameworks leave in TMPDIR goes at exit; what was there before, or is in use, stays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _run(code: str, tmpdir: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True, timeout=60)


def test_new_entries_removed_at_exit_old_and_filled_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "torchinductor_before").mkdir()  # the user's own cache, from an earlier run: never touched
    os.utime(tmp_path / "torchinductor_before", (time.time() - 60, time.time() - 60))
    _run(
        """
        import os, tempfile
        from aimass import tempfiles
        tempfiles.claim("torchinductor_*", directory=True)
        tempfiles.claim(".ses", directory=False)
        t = tempfile.gettempdir()
        os.mkdir(os.path.join(t, "torchinductor_new"))              # what torch leaves: empty
        os.makedirs(os.path.join(t, "torchinductor_used", "triton"))  # a cache someone filled
        open(os.path.join(t, ".ses"), "w").write("1796611155632")   # onnxruntime's session file
        """,
        tmp_path,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torchinductor_before", "torchinductor_used"]


def test_what_the_run_made_before_the_claim_is_removed_too(tmp_path: Path) -> None:
    # A script that builds its torch model before aimass sees it: torch made the directory first.
    _run(
        """
        import os, tempfile
        os.mkdir(os.path.join(tempfile.gettempdir(), "torchinductor_early"))
        from aimass import tempfiles
        tempfiles.claim("torchinductor_*", directory=True)
        """,
        tmp_path,
    )
    assert list(tmp_path.iterdir()) == []


def test_a_file_from_before_the_process_is_kept(tmp_path: Path) -> None:
    (tmp_path / ".ses").write_text("someone else's")
    os.utime(tmp_path / ".ses", (time.time() - 60, time.time() - 60))
    _run(
        """
        from aimass import tempfiles
        tempfiles.claim(".ses", directory=False)
        print(tempfiles.remove_claimed())
        """,
        tmp_path,
    )
    assert (tmp_path / ".ses").read_text() == "someone else's"
