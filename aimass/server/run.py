"""Run an ASGI app with uvicorn, on uvloop and httptools when they are installed.

Requests must arrive in time: their headers within ``header_timeout`` seconds of the connection
(or of their first byte) and their body within ``body_timeout`` seconds more, else the connection
is closed (:mod:`aimass.server.deadlines`).

Example:
    >>> serve(create_app(repository="models/"), port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from typing import Any

from aimass.server.deadlines import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT

__all__ = ["serve", "uvicorn_options"]


def uvicorn_options(
    log_level: str = "warning",
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> dict[str, Any]:
    """The ``uvicorn.Config`` settings every aimass server uses (one process or many workers).

    ``header_timeout`` / ``body_timeout``: seconds a request's headers / body may take to arrive (0: no limit).

    Example:
        >>> uvicorn_options()["lifespan"]
        'on'
    """
    from aimass.server.deadlines import protocol

    # uvloop and httptools are optional speed-ups (measured in benchmarks/serve_throughput.py).
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": protocol(http, header_timeout=header_timeout, body_timeout=body_timeout),
        "log_level": log_level,
        "access_log": False,
        "proxy_headers": False,  # the app never reads the client address: skip uvicorn's middleware
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    grpc_port: int | None = None,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` until interrupted (one process, one event loop; models run in worker threads).

    Several processes sharing the port: :func:`aimass.server.workers.serve_workers`. ``grpc_port``
    serves V2 over gRPC too, on the same loop (:func:`aimass.server.grpc.serve_http_and_grpc`).
    ``header_timeout`` / ``body_timeout``: see :func:`uvicorn_options`. ``sock``: a socket already
    bound to ``host:port`` (:func:`aimass.server.listen.bind`, which is how the CLI refuses a busy
    port before it prints anything); without it the port is bound here, AddressInUse when taken.
    A server that does not start (its lifespan failed: the log says why) raises AimassError.
    """
    from aimass.errors import AimassError
    from aimass.server.listen import bind

    options = uvicorn_options(log_level, header_timeout=header_timeout, body_timeout=body_timeout)
    if sock is None:
        sock = bind(host, port)
    with sock:
        if grpc_port:
            from aimass.server.grpc import serve_http_and_grpc

            serve_http_and_grpc(app, host=host, port=port, grpc_port=grpc_port, uvicorn_options=options, sock=sock)
            return
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it captured once it has shut down
            server.run(sockets=[sock])
        if not server.started:  # uvicorn.run would sys.exit(3) here: an exit code the CLI does not document
            raise AimassError(f"the server on {host}:{port} did not start (the log above says why)")
