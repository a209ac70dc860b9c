"""What a web browser may ask of the server: the Host allow-list and the rules for requests that change state.

A browser on the operator's machine can reach a server bound to loopback, and a page from any
origin can make it send requests there:

- **DNS rebinding**: a page from ``attacker.example`` re-resolves its own name to ``127.0.0.1`` and
  reads the answers as same-origin. Its requests carry ``Host: attacker.example``: the Host
  allow-list refuses them (400). A server bound to loopback accepts only loopback names by default
  (``localhost``, ``127.0.0.1``, ``[::1]``, any port); ``--allowed-hosts`` lists others (``*``:
  any). Health endpoints are exempt: probes address a pod by its IP, and they answer nothing.
- **Cross-site requests** (CSRF): a page can ``fetch(url, {method: "POST", mode: "no-cors"})`` or
  submit a form without asking the server first, when the request is "simple": a Content-Type of
  ``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data`` (or none) and
  no custom header. A request that changes state (any method but GET/HEAD/OPTIONS) is refused
  when its ``Origin`` is neither this server (same host and port as ``Host``) nor listed in
  ``--allowed-origins`` (403), or when its Content-Type is one of those three (415) without the
  custom header ``X-Requested-With``. A load or unload without a body needs a JSON Content-Type
  or that header too. A body without a Content-Type passes: the stock tritonclient sends its JSON
  requests that way, and a browser sending one cross-origin always adds an ``Origin``.

JSON (``application/json``), the binary extension (``application/octet-stream`` with
``Inference-Header-Content-Length``), aimass's own client, tritonclient, and ``curl -H
'Content-Type: application/json'`` all pass. gRPC is not reachable from a browser and is not checked.

Example:
    >>> policy = BrowserPolicy(allowed_hosts=allowed_hosts_for("127.0.0.1"))
    >>> policy.check_host([(b"host", b"localhost:8000")])
    >>> policy.check_host([(b"host", b"attacker.example")])   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    aimass.server.http.HTTPError: Host 'attacker.example' is not served here (allowed: localhost, ...
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from aimass.server.http import HTTPError

__all__ = [
    "CUSTOM_HEADER",
    "LOOPBACK_HOSTS",
    "BrowserPolicy",
    "allowed_hosts_for",
    "changes_state",
    "exposure_warnings",
    "is_loopback",
]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# A header a page cannot add to a cross-origin request without the server's consent (a CORS
# preflight, which this server never grants); the conventional one, set by many HTTP libraries.
CUSTOM_HEADER = "x-requested-with"
# Media types a browser sends cross-origin without a preflight (the Fetch standard's CORS-safelisted ones).
_SIMPLE_TYPES = frozenset({b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def is_loopback(host: str) -> bool:
    """Whether a listening address (``127.0.0.1``, ``::1``, ``localhost``) is reachable from this machine only.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def changes_state(method: str) -> bool:
    """Whether requests of ``method`` may change state (all but GET, HEAD and OPTIONS).

    Example:
        >>> changes_state("POST"), changes_state("GET")
        (True, False)
    """
    return method not in _SAFE_METHODS


def allowed_hosts_for(bind_host: str, allowed: Collection[str] | None = None) -> tuple[str, ...] | None:
    """The Host allow-list of a server listening on ``bind_host``: ``allowed`` when given, else the default.

    The default is the loopback names on a loopback address, and None (any Host) beyond it, where
    :func:`exposure_warnings` says so at start. ``*`` in ``allowed`` also means any Host.

    Example:
        >>> allowed_hosts_for("127.0.0.1"), allowed_hosts_for("0.0.0.0")
        (('localhost', '127.0.0.1', '[::1]'), None)
        >>> allowed_hosts_for("0.0.0.0", ["api.example.com"])
        ('api.example.com',)
    """
    if allowed:
        names = tuple(a.strip() for a in allowed if a.strip())
        return None if "*" in names else names
    return LOOPBACK_HOSTS if is_loopback(bind_host) else None


def exposure_warnings(
    bind_host: str, *, token: bool, allowed_hosts: Collection[str] | None, exposed: str = "run, load and unload models"
) -> list[str]:
    """What to warn about at start when the server listens beyond loopback (empty on loopback).

    ``exposed`` says what anyone who reaches the address could do without a token.

    Example:
        >>> [w.split(":")[0] for w in exposure_warnings("0.0.0.0", token=False, allowed_hosts=None)]
        ['listening on 0.0.0.0 without a bearer token', 'listening on 0.0.0.0 and accepting any Host header']
    """
    if is_loopback(bind_host):
        return []
    out = []
    if not token:
        out.append(
            f"listening on {bind_host} without a bearer token: anyone who can reach this address can {exposed} "
            "(set AIMASS_SERVER_TOKEN)"
        )
    if allowed_hosts is None:
        out.append(
            f"listening on {bind_host} and accepting any Host header: list the names clients use with "
            "--allowed-hosts to refuse DNS-rebinding pages"
        )
    return out


def _host_name(value: str) -> str:
    """``'LocalHost:8000'`` -> ``'localhost'``; ``'[::1]:8000'`` -> ``'[::1]'`` (ports are never compared)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") == 1 else value.rstrip(".")


def _normalise_host(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if ":" in name and not name.startswith("["):  # a bare IPv6 address, as a user may write ::1
        return f"[{name}]"
    return name


def _authority(value: str, scheme: str = "http") -> str:
    """``Host`` or an origin's ``host[:port]``, lower-cased, without the scheme's default port."""
    value = value.strip().lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and value.endswith(":" + port) and not value.endswith("]"):
        value = value[: -len(port) - 1]
    return value


class BrowserPolicy:
    """The Host allow-list and the state-change rules of one server (see the module's docstring).

    ``allowed_hosts``: names (``api.example.com``, ``*.example.com``, ``[::1]``), or None for any.
    ``allowed_origins``: origins other than the server itself that may change state
    (``https://ui.example.com``; ``*`` for any).

    Example:
        >>> policy = BrowserPolicy(allowed_hosts=None, allowed_origins=["https://ui.example.com"])
        >>> policy.check_state_change([(b"host", b"h:8000"), (b"content-type", b"application/json")], path="/v2/x")
    """

    def __init__(self, allowed_hosts: Collection[str] | None = None, allowed_origins: Collection[str] = ()) -> None:
        hosts = None if allowed_hosts is None else [_normalise_host(h) for h in allowed_hosts if h.strip()]
        self.allowed_hosts: tuple[str, ...] | None = None if hosts is None or "*" in hosts else tuple(hosts)
        self._exact = frozenset(h for h in self.allowed_hosts or () if not h.startswith("*."))
        self._suffixes = tuple(h[1:] for h in self.allowed_hosts or () if h.startswith("*."))
        origins = [o.strip().rstrip("/").lower() for o in allowed_origins if o.strip()]
        self.any_origin = "*" in origins
        self.allowed_origins = frozenset(origins)

    def check_host(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Refuse (HTTPError 400) a request whose ``Host`` is not in the allow-list; anything passes without one."""
        if self.allowed_hosts is None:
            return
        raw = next((v for k, v in headers if k == b"host"), b"").decode("latin-1")
        name = _host_name(raw)
        if name in self._exact or (self._suffixes and name.endswith(self._suffixes)):
            return
        shown = raw[:100] if raw else "(none)"
        allowed = ", ".join(self.allowed_hosts)
        raise HTTPError(f"Host {shown!r} is not served here (allowed: {allowed}); add it with --allowed-hosts", 400)

    def check_state_change(
        self, headers: Iterable[tuple[bytes, bytes]], *, method: str = "POST", path: str, empty_body: bool = False
    ) -> None:
        """Refuse a request that changes state when a page on another origin could have sent it.

        403 for a foreign ``Origin``; 415 for a form or text Content-Type without ``X-Requested-With``,
        and for an empty body (``empty_body``, what a load or unload may have) with neither a JSON
        Content-Type nor that header.
        """
        host = origin = content_type = b""
        custom = False
        for key, value in headers:
            if key == b"host":
                host = value
            elif key == b"origin":
                origin = value
            elif key == b"content-type":
                content_type = value
            elif key == b"x-requested-with" or key == b"inference-header-content-length":
                custom = True
        if origin:
            self._check_origin(origin.decode("latin-1"), host.decode("latin-1"), f"{method} {path}")
        if custom:
            return
        media = content_type.split(b";", 1)[0].strip().lower()
        if media in _SIMPLE_TYPES:
            raise HTTPError(
                f"{method} {path} with Content-Type {media.decode('latin-1')!r} refused: a web page can send that "
                "from another site; send Content-Type: application/json (curl: -H 'Content-Type: application/json') "
                "or the header X-Requested-With",
                415,
            )
        if empty_body and media not in (b"application/json", b"application/octet-stream"):
            raise HTTPError(
                f"{method} {path} without a body needs Content-Type: application/json or the header X-Requested-With "
                "(a web page from another site can send a bare POST)",
                415,
            )

    def _check_origin(self, origin: str, host: str, request: str) -> None:
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.allowed_origins:
            return
        parts = urlsplit(origin) if "://" in origin else None
        if parts is not None and parts.netloc and _authority(parts.netloc, parts.scheme) == _authority(host):
            return  # same origin: the server's own pages (the dashboard)
        raise HTTPError(
            f"cross-origin {request} refused: Origin {origin[:100]!r} is not this server "
            f"(Host {host[:100]!r}); allow it with --allowed-origins",
            403,
        )
