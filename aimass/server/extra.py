"""The packages of the ``[server]`` extra, asked for before any server module imports them.

The server's modules import orjson, uvicorn and prometheus-client at their top. Without the extra
that was a bare ``ModuleNotFoundError: No module named 'orjson'`` from deep inside ``aimass serve``.
``aimass/server/__init__.py`` calls :func:`require_server` before it imports anything else, and every
``import aimass.server.<module>`` runs that file first: ``aimass serve``, ``aimass ui``,
``create_app`` and ``aimass scale`` all raise :class:`~aimass.errors.MissingDependency` naming the
extra instead (the CLI prints ``error: the aimass server needs orjson: pip install 'aimass[server]'``).
Optional speed-ups (uvloop, httptools, psutil) and the other extras' packages (grpcio, pyarrow,
opentelemetry) are asked for where they are used, through :func:`aimass.dependencies.require`.

Example:
    >>> require_server()   # the extra is installed: nothing to say
"""

from __future__ import annotations

from aimass.dependencies import require

__all__ = ["SERVER_PACKAGES", "require_server"]

#: Module -> distribution of every package the server imports at module level ([server] in pyproject.toml).
SERVER_PACKAGES: dict[str, str] = {
    "orjson": "orjson",
    "uvicorn": "uvicorn",
    "prometheus_client": "prometheus-client",
}


def require_server(feature: str = "the aimass server") -> None:
    """Raise MissingDependency naming ``[server]`` when a package of :data:`SERVER_PACKAGES` is missing.

    Example:
        >>> require_server("aimass serve")
    """
    for module, package in SERVER_PACKAGES.items():
        require(module, feature=feature, extra="server", package=package)
