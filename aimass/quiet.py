"""Quiet calls into dependencies: what a library says about itself, silenced around the one call that makes it.

Frameworks report on themselves while aimass uses them: torch's ONNX exporter logs that
torchvision is not installed (four lines per export), torchao logs every native library it cannot
load and that triton is missing. None of it is about the user's model, and none of it can be acted
on. :func:`silenced` raises the named loggers to ERROR and ignores the given warning categories for
the duration of one call, then puts them back: nothing is silenced globally, and the user's own
logging and warnings settings outside the call are untouched. Errors still get through.

Example:
    >>> import logging
    >>> with silenced(loggers=("torchao",), categories=(FutureWarning,)):
    ...     logging.getLogger("torchao.kernel").warning("Detected no triton")   # not shown
    >>> logging.getLogger("torchao").level
    0
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

__all__ = ["silenced"]


@contextlib.contextmanager
def silenced(
    *, loggers: Sequence[str] = (), categories: Sequence[type[Warning]] = (), messages: Sequence[str] = ()
) -> Iterator[None]:
    """Inside the block: ``loggers`` (and their children) log errors only; ``categories`` and ``messages`` ignored.

    ``messages`` are regular expressions matched at the start of a warning's text, as in
    :func:`warnings.filterwarnings`.

    Example:
        >>> import warnings
        >>> with silenced(messages=("Exporting a model while it is in training mode",)):
        ...     warnings.warn("Exporting a model while it is in training mode")   # not shown
    """
    saved = [(logger, logger.level) for logger in map(logging.getLogger, loggers)]
    try:
        for logger, _ in saved:
            # Raised, never lowered: a user who asked for ERROR-only or less keeps it.
            logger.setLevel(max(logging.ERROR, logger.getEffectiveLevel()))
        with warnings.catch_warnings():
            for category in categories:
                warnings.simplefilter("ignore", category)
            for message in messages:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
