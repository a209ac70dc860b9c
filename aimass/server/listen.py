"""Bind a server's listening sockets before it announces anything.

A server that binds late prints "serving on :8000", then fails on a busy port (uvicorn exits with
code 3 after its own log line), and cannot tell which port ``--port 0`` got. :func:`bind` takes
the address first: a busy port is an :class:`~aimass.errors.AddressInUse` naming the address, and
the bound socket (handed to uvicorn, or shared by worker processes) knows its real port.
:func:`ensure_free` checks a port that another library binds itself (grpcio's), without keeping it.

Example:
    >>> sock = bind("127.0.0.1", 0)
    >>> port(sock) > 0
    True
    >>> sock.close()
"""

from __future__ import annotations

import socket

from aimass.errors import AddressInUse

__all__ = ["bind", "ensure_free", "port"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(host: str, port: int, *, what: str = "HTTP") -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), ready to hand to uvicorn.

    As uvicorn's own binding: ``SO_REUSEADDR`` (a restart does not wait for TIME_WAIT), inheritable
    (worker processes share it). AddressInUse names the address and what it was for.

    Example:
        >>> with bind("127.0.0.1", 0) as sock:
        ...     sock.getsockname()[0]
        '127.0.0.1'
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AddressInUse(_message(host, port, what, e)) from None
    sock.set_inheritable(True)
    return sock


def ensure_free(host: str, port: int, *, what: str = "gRPC") -> None:
    """AddressInUse when ``host:port`` cannot be bound now (for a port another library binds itself).

    Example:
        >>> ensure_free("127.0.0.1", 0)
    """
    bind(host, port, what=what).close()


def port(sock: socket.socket) -> int:
    """The port ``sock`` is bound to (the real one after binding port 0).

    Example:
        >>> with bind("127.0.0.1", 0) as s:
        ...     port(s) == s.getsockname()[1]
        True
    """
    return int(sock.getsockname()[1])


def _message(host: str, port: int, what: str, error: OSError) -> str:
    reason = (error.strerror or str(error)).lower()
    hint = {
        "address already in use": "another process listens there: stop it or pick another port",
        "cannot assign requested address": "no interface of this machine has that address",
        "permission denied": "ports below 1024 need privileges: pick a port above 1023",
    }.get(reason, "")
    return f"cannot listen on {host}:{port} ({what}): {reason}" + (f"; {hint}" if hint else "")
