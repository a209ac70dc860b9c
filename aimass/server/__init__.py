"""The V2 model server: :func:`create_app` builds the ASGI app, :func:`serve` runs it with uvicorn.

Both read one :class:`ServerSettings` (one name per knob, the names of the ``aimass serve`` flags).

Example:
    >>> from aimass.server import ServerSettings, create_app, serve
    >>> app = create_app(repository="models/", max_batch_size=64)   # doctest: +SKIP
    >>> app = create_app(repository="models/", settings=ServerSettings(max_batch_size=64, threads=4))  # doctest: +SKIP
    >>> serve(app, host="127.0.0.1", port=8000)                      # doctest: +SKIP
"""

# ruff: noqa: E402 (the server's packages are asked for before any server module imports them)

from __future__ import annotations

from aimass.server.extra import require_server

# Before any server module imports orjson or uvicorn: without the [server] extra, say so by name.
require_server()

from aimass.server.app import DEFAULT_MAX_BODY_SIZE, App, create_app
from aimass.server.http import HTTPError, error_response
from aimass.server.run import serve
from aimass.server.settings import ServerSettings

__all__ = ["DEFAULT_MAX_BODY_SIZE", "App", "HTTPError", "ServerSettings", "create_app", "error_response", "serve"]
