"""A worker setup that holds the GIL for a while, as a framework's import or a session build can.

While it runs, no other thread of the worker runs: not even the one that answers the supervisor's
health check. ``serve_workers(setup=hold_gil)`` makes a worker that starts slowly but is fine.

Example:
    >>> hold_gil(0.01)
"""

from __future__ import annotations

import ctypes
import os

#: Seconds each worker holds the GIL while it starts (the test's script sets it through the environment).
SECONDS = float(os.environ.get("AIMASS_TEST_HOLD_GIL", "2.5"))


def hold_gil(seconds: float | None = None) -> None:
    """Sleep in C through ``ctypes.PyDLL``, which keeps the GIL for the whole call."""
    ctypes.PyDLL(None).usleep(int((SECONDS if seconds is None else seconds) * 1e6))
