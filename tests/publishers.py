"""A publisher in a child process that a store test kills mid-publish (local directory and S3 alike).

Example::

    proc = start_publisher(tmp_path, "slow", SAVE, f"Store({root!r})", str(flag))
    kill_when(proc, flag.exists, timeout=60)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

_SCRIPT = """\
import sys, time
from pathlib import Path
from aimass import Model
from aimass.backends.base import Backend
from aimass.schema import Schema, TensorSpec
from aimass.store import Store

class Publisher(Backend):
    # A real backend; only its save() is the test's own (the part of a publish the test interrupts).
    name = {name!r}
    framework = "numpy"
    extra = "none"
    schema = Schema(inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 4])])

    @classmethod
    def load(cls, source, **kw):
        return cls()

    def run(self, inputs):
        return {{}}

    def save(self, directory):
{save}

{store}.publish(Model(Publisher()), "fraud")
"""


def start_publisher(tmp_path: Path, name: str, save: str, store: str, *args: str) -> subprocess.Popen[bytes]:
    """Run a script that publishes, as ``fraud``, a Model whose backend ``save(directory)`` body is ``save``.

    ``store`` is the Python expression of the target Store; ``args`` are the script's ``sys.argv[1:]``.
    """
    script = tmp_path / f"{name}_publisher.py"
    body = textwrap.indent(textwrap.dedent(save).strip("\n"), " " * 8)
    script.write_text(_SCRIPT.format(name=name, save=body, store=store))
    return subprocess.Popen([sys.executable, str(script), *args])


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it exits first or ``timeout`` seconds pass."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "publisher exited before it could be killed"
            assert time.monotonic() < deadline, "publisher never got far enough to be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
