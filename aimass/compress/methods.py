"""Which framework tool compresses which backend: the compressor tables of :mod:`aimass.plugins`.

A framework declares ``compressors[(backend, method)] = "module:function"`` in its manifest
(``aimass/frameworks/<name>/plugin.py``); the function is a :class:`~aimass.plugins.Compressor`:
it takes the backend and ``data=`` plus method options and returns a
:class:`~aimass.backends.base.Derived`. Nothing in ``compress`` names a backend.

Example:
    >>> sorted(supported("torch"))
    ['bf16', 'fp16', 'int8', 'prune', 'prune-structured']
"""

from __future__ import annotations

import functools

from aimass import plugins
from aimass.errors import UnsupportedOperation

__all__ = ["METHODS", "compressor", "supported"]

METHODS = ("int8", "int8-static", "fp16", "bf16", "prune", "prune-structured")


def supported(backend: str) -> list[str]:
    """Methods the table holds for ``backend``."""
    return [method for (b, method) in plugins.keys(plugins.COMPRESSOR) if b == backend]


def compressor(backend: str, method: str) -> plugins.Compressor:
    """The function that applies ``method`` to a ``backend`` model, or UnsupportedOperation saying what exists.

    A backend holding a network on another backend (a text model) has no compressor of its own: its
    wrapped compressor hands the network to that backend's compressor for the same method.
    """
    compressors = plugins.keys(plugins.COMPRESSOR)
    if (backend, method) not in compressors and backend in plugins.keys(plugins.WRAPPED_COMPRESSOR):
        wrapped = plugins.lookup(plugins.WRAPPED_COMPRESSOR, backend)
        tool: plugins.Compressor = functools.partial(wrapped, tool_for=lambda network: compressor(network.name, method))
        return tool
    try:
        return plugins.lookup(plugins.COMPRESSOR, (backend, method))
    except KeyError:
        hints = plugins.entries(plugins.COMPRESS_HINT)
        if backend in hints:
            raise UnsupportedOperation(hints[backend]) from None
        table: dict[str, list[str]] = {}
        for b, m in compressors:
            table.setdefault(b, []).append(m)
        listed = "; ".join(f"{b}: {', '.join(ms)}" for b, ms in table.items())
        raise UnsupportedOperation(
            f"compression {method!r} is not available for the {backend} backend; supported: {listed}"
        ) from None
