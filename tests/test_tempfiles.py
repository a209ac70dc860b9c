"""aimass.tempfiles: what frameworks leave in TMPDIR goes at exit; what was there before, or is in use, stays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str, tmpdir: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True, timeout=60)


def test_new_entries_removed_at_exit_old_and_filled_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "torchinductor_before").mkdir()  # the user's own cache: never touched
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


def test_a_file_claimed_before_it_existed_is_kept_when_it_was_there(tmp_path: Path) -> None:
    (tmp_path / ".ses").write_text("someone else's")
    _run(
        """
        from aimass import tempfiles
        tempfiles.claim(".ses", directory=False)
        print(tempfiles.remove_claimed())
        """,
        tmp_path,
    )
    assert (tmp_path / ".ses").read_text() == "someone else's"
