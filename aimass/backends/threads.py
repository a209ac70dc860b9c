"""Threads per model call: the capability of a backend whose framework runs one call on several threads.

A server runs ``instances`` model calls at once per model; on a small machine, each call's own
thread pool (onnxruntime's and torch's default to every core) then fights the others and the
event loop for the same cores. A backend that implements :class:`ThreadLimit` can be told how
many threads one call may use; the server (:mod:`aimass.server.compute`) decides the number.
The capability is declared by the method, never by the backend's name: :func:`thread_limit` is
the one test.

Example:
    >>> thread_limit(object()) is None
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aimass.backends.base import Backend

__all__ = ["ThreadLimit", "thread_limit"]


@runtime_checkable
class ThreadLimit(Protocol):
    """A backend that can run each call on at most ``threads`` threads (onnxruntime, torch, text models)."""

    def limit_threads(self, threads: int) -> Backend:
        """A backend whose calls use at most ``threads`` threads: a new one, or this one when nothing changes.

        An explicit choice made at load (``session_options.intra_op_num_threads``) stands.
        """
        ...


def thread_limit(backend: Any) -> ThreadLimit | None:
    """``backend`` as a :class:`ThreadLimit`, or None when it does not declare the capability.

    Example:
        >>> thread_limit(Model.load("mlp.onnx").backend) is not None   # doctest: +SKIP
        True
    """
    return backend if isinstance(backend, ThreadLimit) else None
