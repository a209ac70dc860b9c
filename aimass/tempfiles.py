"""What frameworks leave in the temporary directory while aimass uses them, removed when the process ends.

Some libraries write into ``TMPDIR`` as a side effect of being imported, not because aimass asked
for a file: torch creates an empty ``torchinductor_<user>`` cache directory when its export and
quantization machinery loads, onnxruntime writes a ``.ses`` session file when it is imported.
A framework's folder claims such names (:func:`claim`) before aimass first imports the framework;
what appears under a claimed name after the claim is removed at exit. A claimed directory is removed only
while empty (a cache that someone filled is kept), and anything that existed before the claim,
the user's own torch cache included, is never touched.

Example:
    >>> claim("torchinductor_*", directory=True)   # in aimass/frameworks/torch/__init__.py
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import tempfile
import threading

__all__ = ["claim", "remove_claimed"]

# pattern (an absolute glob under the temporary directory) -> (is a directory, names that existed at the claim)
_claimed: dict[str, tuple[bool, frozenset[str]]] = {}
_lock = threading.Lock()


def claim(pattern: str, *, directory: bool) -> None:
    """Remove at exit what ``pattern`` (a glob in the temporary directory) matches that it does not match now.

    Example:
        >>> claim(".ses", directory=False)   # in aimass/frameworks/onnx/__init__.py
    """
    path = os.path.join(tempfile.gettempdir(), pattern)
    with _lock:
        if path in _claimed:
            return
        if not _claimed:
            atexit.register(remove_claimed)
        _claimed[path] = (directory, frozenset(glob.glob(path)))


def remove_claimed() -> list[str]:
    """Remove what appeared under the claimed names since their claim (empty directories only); what was removed.

    Runs at exit; callable earlier (tests, long-lived servers after a conversion).

    Example:
        >>> remove_claimed()   # doctest: +SKIP
        ['/tmp/.ses', '/tmp/torchinductor_ana']
    """
    removed = []
    with _lock:
        for path, (directory, before) in _claimed.items():
            for found in sorted(set(glob.glob(path)) - before):
                # rmdir refuses a directory that is not empty: a cache in use is kept.
                if directory != os.path.isdir(found):
                    continue
                with contextlib.suppress(OSError):
                    if directory:
                        os.rmdir(found)
                    else:
                        os.unlink(found)
                    removed.append(found)
    return removed
