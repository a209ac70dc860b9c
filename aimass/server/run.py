"""Run an ASGI app with uvicorn, on uvloop and httptools when they are installed.

Example:
    >>> serve(create_app(repository="models/"), port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["serve"]


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve ``app`` until interrupted (one process, one event loop; models run in worker threads)."""
    import uvicorn

    # uvloop and httptools are optional speed-ups (measured in benchmarks/serve_throughput.py).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # the app never reads the client address: skip uvicorn's middleware
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
