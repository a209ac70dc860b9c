"""What frameworks leave in the temporary directory while aimass uses them, removed when the process ends.

Some libraries write into ``TMPDIR`` as a side effect of being imported, not because aimass asked
for a file: torch creates an empty ``torchinductor_<user>`` cache directory when its export and
quantization machinery loads, onnxruntime writes a ``.ses`` session file when it is imported.
A framework's folder claims such names (:func:`claim`) when aimass first uses the framework; what
this process's run made under a claimed name is removed at exit: what appears after the claim, and
what appeared earlier in the same run (a script that built its torch model before handing it to
aimass), judged by its modification time against the process's start (Linux; elsewhere only what
appears after the claim). A claimed directory is removed only while empty (a cache that someone
filled is kept), and what existed before the process started, the user's own torch cache
included, is never touched.

The temporary names aimass itself writes through before a rename (a package's staging directory,
an alias file's next version) are made here too, with :func:`staging_dir` and :func:`staging_file`:
unlike :func:`tempfile.mkdtemp` (0700) and :func:`tempfile.mkstemp` (0600), they get the mode a
plain ``mkdir`` or ``open`` gives, so the umask decides who may read a shared model library.

Example:
    >>> claim("torchinductor_*", directory=True)   # in aimass/frameworks/torch/__init__.py
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["claim", "remove_claimed", "staging_dir", "staging_file"]

# pattern (an absolute glob under the temporary directory) -> (is a directory, names that existed at the claim)
_claimed: dict[str, tuple[bool, frozenset[str]]] = {}
_lock = threading.Lock()


def claim(pattern: str, *, directory: bool) -> None:
    """Remove at exit what ``pattern`` (a glob in the temporary directory) matches and this process's run made.

    Example:
        >>> claim(".ses", directory=False)   # in aimass/frameworks/onnx/__init__.py
    """
    path = os.path.join(tempfile.gettempdir(), pattern)
    with _lock:
        if path in _claimed:
            return
        if not _claimed:
            atexit.register(remove_claimed)
        started = _process_start()
        kept = frozenset(p for p in glob.glob(path) if started is None or _mtime(p) < started)
        _claimed[path] = (directory, kept)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _process_start() -> float | None:
    """When this process started, in seconds since the epoch (Linux's /proc), or None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            # Field 22, starttime, in clock ticks since boot; fields are counted after the command's ")".
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        # The process's age on the boot clock, taken from the wall clock now (immune to clock changes since boot).
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


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


def staging_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new directory ``parent/<prefix><random>`` with the umask's mode (0755 under umask 022), not 0700.

    What :func:`tempfile.mkdtemp` does, except the mode: a package renamed from here into a shared
    library is readable by whom the umask says.

    Example:
        >>> d = staging_dir(tempfile.gettempdir(), ".fraud.tmp-"); d.rmdir()
    """
    for _ in range(100):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)  # the umask takes off what it takes off, as for any mkdir
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free staging name for {prefix!r} after 100 tries")


def staging_file(parent: str | os.PathLike[str], prefix: str) -> tuple[int, str]:
    """A new file ``parent/<prefix><random>`` open for writing, with the umask's mode (0644 under umask 022).

    What :func:`tempfile.mkstemp` returns (a descriptor and the path), except the mode.

    Example:
        >>> fd, path = staging_file(tempfile.gettempdir(), ".aliases.json."); os.close(fd); os.unlink(path)
    """
    for _ in range(100):
        path = os.path.join(parent, f"{prefix}{secrets.token_hex(4)}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free staging name for {prefix!r} after 100 tries")
