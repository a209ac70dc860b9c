"""Text that leaves the process, made safe to show: server paths and secrets removed, length capped.

One helper for every place that turns an error into text someone else reads: the server's error
answers (:meth:`aimass.server.dataplane.DataPlane.redact`, HTTP and gRPC), load-failure reasons in
the repository index and the log, the dashboard (``aimass ui``), and what a remote server answered
(kept out of messages, cut and redacted in the log). :func:`redact` cuts absolute paths of this
machine to their last component, hides ``NAME=value`` pairs whose name says secret
(``DB_PASSWORD=...``, ``api_key: ...``), bearer and basic credentials and URL user-info, and the
``secrets`` it is given (the server's token);
:func:`cut` caps a text; :func:`reason` is the short line an exception becomes.

Example:
    >>> redact("cannot read /usr/lib/x/model.onnx: DB_PASSWORD=hunter2")
    'cannot read .../model.onnx: DB_PASSWORD=<redacted>'
    >>> reason(RuntimeError("boom " * 100), limit=30)
    'RuntimeError: boom boom bo ...'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["REASON_LIMIT", "cut", "reason", "redact"]

#: Characters of a load-failure reason (index, log) or of a remote answer kept in the log.
REASON_LIMIT = 200

# An absolute path of two or more components, not preceded by a word, dot or slash (so not a URL's path).
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+~-]+/)+[\w.@+~-]*")
# NAME=value or NAME: value where NAME ends in a word that says secret. The name must end there
# (``tokenizer: ...`` is not a secret) and no quote may follow it, so a tensor named in a schema
# message (``input 'token': expected ...``) stays readable.
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?))"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"'<>]+)"
)
# A credential after Bearer/Basic has a digit or a symbol in it, so prose ("bearer token") stays.
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+(?=[\w.~+/=-]*[\d.~+/=_-])[\w.~+/=-]{6,}")
_USERINFO = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")


def _path(match: re.Match[str]) -> str:
    path = match.group(0)
    first = path[1:].split("/", 1)[0]
    if not os.path.isdir("/" + first):
        return path  # not a path on this machine (a URL path such as /v2/models/x): harmless to echo
    return ".../" + path.rstrip("/").rsplit("/", 1)[-1]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without server file-system paths, secret-looking values or the given ``secrets``.

    A path is cut to ``.../<last component>`` when its first component is a directory at this
    machine's root (``/home``, ``/tmp``, ``/srv`` ...); URL paths such as ``/v2/models/x`` stay.

    Example:
        >>> redact("token s3cret at http://bob:pw@host/v2 sent Bearer ab12.cd34", secrets=["s3cret"])
        'token <token> at http://<user>@host/v2 sent Bearer <redacted>'
    """
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "<token>")
    if "/" in text:
        text = _ABS_PATH.sub(_path, text)
        if "://" in text:
            text = _USERINFO.sub("<user>@", text)
    if "=" in text or ":" in text:
        text = _SECRET_PAIR.sub(r"\1\2<redacted>", text)
    return _AUTH_SCHEME.sub(r"\1 <redacted>", text)


def cut(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` on one line, at most ``limit`` characters (``...`` marks the cut).

    Example:
        >>> cut("line one\\nline two", limit=12)
        'line one ...'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: max(limit - 4, 0)].rstrip() + " ..."


def reason(exc: BaseException, limit: int = REASON_LIMIT, secrets: Iterable[str | None] = ()) -> str:
    """A short, redacted line saying why something failed: the error class and its message.

    Example:
        >>> reason(FileNotFoundError("no file /usr/lib/pkg/model.onnx"))
        'FileNotFoundError: no file .../model.onnx'
    """
    message = redact(str(exc), secrets)
    return cut(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, limit)
