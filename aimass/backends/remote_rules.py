"""The rules both remote wire clients (HTTP, gRPC) follow: saved packages, tokens, and remote texts.

A saved remote package (``remote.json`` for HTTP, ``remote_grpc.json`` for gRPC) chooses where the
model lives and harmless client settings, never credentials: :func:`read_package` refuses any other
key or option with the same :class:`~aimass.errors.IntegrityError` text for both files, and
:func:`package_token` decides, for both, whether ``AIMASS_CLIENT_TOKEN`` goes to the package's host
(listed in ``AIMASS_CLIENT_TOKEN_HOSTS``, :func:`token_host_listed`) or the caller opted in. What a
remote server says reaches an aimass error only as :func:`refusal_text` (a V2 refusal, redacted and
capped) or not at all (:func:`remote_failure` names the status and the host).

Example:
    >>> NON_NEGATIVE.allows(-1), NON_NEGATIVE_OR_NULL.allows(None)
    (False, True)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aimass.errors import IntegrityError, ModelLoadError, RemoteError, SchemaError
from aimass.files import read_json
from aimass.redaction import REASON_LIMIT, cut, redact

__all__ = [
    "BOOLEAN",
    "CLIENT_TOKEN_ENV",
    "CLIENT_TOKEN_HOSTS_ENV",
    "ModelUrl",
    "NON_NEGATIVE",
    "NON_NEGATIVE_OR_NULL",
    "OptionRule",
    "PackageRules",
    "client_token",
    "in_schema_order",
    "package_token",
    "read_package",
    "refusal_text",
    "remote_failure",
    "schema_refusal",
    "token_host_listed",
]

#: The env var holding the client's bearer token (never the server's ``AIMASS_SERVER_TOKEN``).
CLIENT_TOKEN_ENV = "AIMASS_CLIENT_TOKEN"
#: Comma-separated ``host[:port]`` list: the hosts a package URL may point at to get ``AIMASS_CLIENT_TOKEN``.
CLIENT_TOKEN_HOSTS_ENV = "AIMASS_CLIENT_TOKEN_HOSTS"
MESSAGE_LIMIT = 500  # characters of a V2 refusal's message passed on (a schema error names shapes)
# A refusal that names its tensor the way aimass, Triton and MLServer word it.
_TENSOR_IN_MESSAGE = re.compile(r"^(?:input|output) '([^']+)'")
_log = logging.getLogger("aimass")


# -- model URLs and saved packages ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelUrl:
    """A wire's model URLs: the pattern (with ``name`` and ``version`` groups) and how messages name it.

    Example:
        >>> url = ModelUrl(re.compile(r"^x://(?P<name>\\w+)(?P<version>)$"), "x model URL", "x://NAME")
        >>> url.parse("x://m")["name"], url.problem("y://m")
        ('m', "'y://m' is not a x model URL (expected x://NAME)")
    """

    pattern: re.Pattern[str]
    words: str
    form: str

    def problem(self, url: str) -> str | None:
        """What is wrong with ``url`` (None when it is one)."""
        return None if self.pattern.match(url) else f"{url!r} is not a {self.words} (expected {self.form})"

    def parse(self, url: str) -> re.Match[str]:
        """``url``'s parts; :class:`~aimass.errors.ModelLoadError` when it is not one."""
        match = self.pattern.match(url)
        if match is None:
            raise ModelLoadError(f"not a {self.words}: {url!r} (expected {self.form})")
        return match


@dataclasses.dataclass(frozen=True)
class OptionRule:
    """What value a package option may hold, and how a refusal words it."""

    allows: Callable[[Any], bool]
    words: str


def _non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


NON_NEGATIVE = OptionRule(_non_negative, "a non-negative number")
NON_NEGATIVE_OR_NULL = OptionRule(lambda v: v is None or _non_negative(v), "a non-negative number or null")
BOOLEAN = OptionRule(lambda v: isinstance(v, bool), "true or false")


@dataclasses.dataclass(frozen=True)
class PackageRules:
    """One wire's saved package: its file, the options it may set, its URL check and token hosts.

    ``url_problem(url)`` says what is wrong with a package's URL (None when it is a plain model URL
    of that wire, without credentials); ``from_caller`` names what only the caller may give;
    ``host_listed(url)`` whether ``AIMASS_CLIENT_TOKEN_HOSTS`` lists the URL's host:port
    (:func:`token_host_listed`, with the wire's reading of addresses).
    """

    artifact: str
    options: Mapping[str, OptionRule]
    from_caller: str
    url_problem: Callable[[str], str | None]
    host_listed: Callable[[str], bool]

    def saved(self, url: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The document a package holds: the URL and the options a package may set, nothing else."""
        return {"url": url, "options": {k: v for k, v in options.items() if k in self.options}}


def read_package(path: Path, options: Mapping[str, Any], rules: PackageRules) -> tuple[str, dict[str, Any]]:
    """The URL and options of a saved remote package, refusing one that tries to carry credentials.

    The caller's ``options`` win over the saved ones; the env client token goes along only when
    ``rules.host_listed(url)`` or the caller passes ``auth_token`` (:func:`package_token`).
    """
    where = f"{path.parent.name}/{path.name}" if path.parent.name else path.name  # never the absolute path

    def refuse(problem: str) -> IntegrityError:
        return IntegrityError(f"remote package file {where}: {problem}")

    saved = read_json(path, IntegrityError, where=f"remote package file {where}")
    if not isinstance(saved, dict) or not isinstance(saved.get("url"), str):
        raise refuse("expected an object with a string 'url'")
    unknown = sorted(set(saved) - {"url", "options"})
    if unknown:
        raise refuse(f"unexpected key {unknown[0]!r} (only 'url' and 'options')")
    url: str = saved["url"]
    saved_options = saved.get("options") or {}
    if not isinstance(saved_options, dict):
        raise refuse("'options' must be an object")
    for key, value in saved_options.items():
        rule = rules.options.get(key)
        if rule is None:
            raise refuse(
                f"option {key!r} is not allowed in a package (only the options {', '.join(rules.options)}; "
                f"{rules.from_caller} come from the caller)"
            )
        if not rule.allows(value):
            raise refuse(f"option {key!r} must be {rule.words}")
    problem = rules.url_problem(url)
    if problem is not None:
        raise refuse(problem)
    merged = {**saved_options, **options}
    token, sending = package_token(options, lambda: rules.host_listed(url))
    merged.update(token)
    _log.warning("package %s points at remote server %s; %s", path.parent, url, sending)
    return url, merged


# -- tokens -----------------------------------------------------------------------------------


def package_token(options: Mapping[str, Any], host_listed: Callable[[], bool]) -> tuple[dict[str, Any], str]:
    """The token a model loaded from a saved remote package sends, and how the load warning says so.

    The one rule for HTTP and gRPC remote packages: the caller's ``auth_token`` option wins; else
    ``AIMASS_CLIENT_TOKEN`` goes only when ``host_listed()`` (its host is in
    ``AIMASS_CLIENT_TOKEN_HOSTS``); else no token. Returns options to merge, and the reason.

    Example:
        >>> package_token({}, lambda: False)[0]
        {'auth_token': None}
    """
    if "auth_token" in options:
        return {}, "sending the auth_token the caller passed" if options["auth_token"] else "sending no token"
    token = os.environ.get(CLIENT_TOKEN_ENV)
    if token and host_listed():
        return {"auth_token": token}, f"sending {CLIENT_TOKEN_ENV} (its host is listed in {CLIENT_TOKEN_HOSTS_ENV})"
    return {"auth_token": None}, (
        f"not sending {CLIENT_TOKEN_ENV}: list its host[:port] in {CLIENT_TOKEN_HOSTS_ENV} "
        "or pass options={'auth_token': ...} to send one"
    )


def client_token(options: Mapping[str, Any]) -> str | None:
    """The bearer token a wire sends: the ``auth_token`` option (None: none), else ``AIMASS_CLIENT_TOKEN``.

    A URL the caller gave gets the env token; a package's URL only what :func:`package_token` allowed,
    which :func:`read_package` puts in its options.

    Example:
        >>> client_token({"auth_token": None}) is None
        True
    """
    token: str | None = options.get("auth_token", os.environ.get(CLIENT_TOKEN_ENV))
    return token


def token_host_listed(
    origin: tuple[str, int], entry_origin: Callable[[str], tuple[str, int] | None], env: Mapping[str, str]
) -> bool:
    """Whether ``origin`` (host, port) is listed in ``AIMASS_CLIENT_TOKEN_HOSTS``.

    ``entry_origin`` reads one listed ``host[:port]`` the way the wire reads its URLs (no port: the
    scheme's default); None for an entry that is not a plain host, which lists nothing.

    Example:
        >>> token_host_listed(("mass", 8000), lambda e: (e, 8000), {CLIENT_TOKEN_HOSTS_ENV: "a, mass"})
        True
    """
    for entry in env.get(CLIENT_TOKEN_HOSTS_ENV, "").split(","):
        entry = entry.strip()
        if entry and entry_origin(entry) == origin:
            return True
    return False


# -- what a remote says -----------------------------------------------------------------------


def refusal_text(message: str) -> str:
    """A V2 refusal's message (bad tensor, unknown model) as passed on: redacted and capped.

    The refusal is the protocol's answer and names the tensor, so it is kept (HTTP and gRPC), but
    like every text a remote server chooses it loses paths and secrets and stops at 500 characters.

    Example:
        >>> refusal_text("input 'x': expected FP32 shape [-1, 4], got INT8 shape [2]")
        "input 'x': expected FP32 shape [-1, 4], got INT8 shape [2]"
    """
    return cut(redact(message[: 4 * MESSAGE_LIMIT]), MESSAGE_LIMIT)


def schema_refusal(message: str, tensor: str | None = None) -> SchemaError:
    """A server's refusal of a tensor as a :class:`~aimass.errors.SchemaError`, naming the tensor.

    Example:
        >>> schema_refusal("input 'x': expected FP32, got INT8").tensor
        'x'
    """
    if tensor is None and (found := _TENSOR_IN_MESSAGE.match(message)):
        tensor = found.group(1)
    return SchemaError(message, tensor=tensor)


def remote_failure(url: str, host: str, status: str, status_code: int, answer: str) -> RemoteError:
    """The :class:`~aimass.errors.RemoteError` for a remote server's error answer, for HTTP and gRPC alike.

    The message names the URL, the status and the host, never the answer: a model server relays
    the message to its own clients and its index, and the answer may hold anything (a proxy's
    error page, ``DB_PASSWORD=...``). The answer's first characters, redacted, go to
    ``RemoteError.detail`` and to one warning in the log.

    Example:
        >>> e = remote_failure("http://h/v2/models/m", "h:80", "HTTP 403", 403, "DB_PASSWORD=hunter2")
        >>> str(e), e.detail
        ('http://h/v2/models/m: HTTP 403 from remote server h:80', 'DB_PASSWORD=<redacted>')
    """
    detail = cut(redact(answer[: 4 * REASON_LIMIT]))
    if detail:
        _log.warning("remote server %s answered %s: %s", host, status, detail)
    return RemoteError(f"{redact(url)}: {status} from remote server {host}", status_code=status_code, detail=detail)


def in_schema_order(outputs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A server's outputs in the schema's order, whatever order it answered in (extra ones last).

    Example:
        >>> list(in_schema_order({"b": 1, "a": 2, "c": 3}, ["a", "b"]))
        ['a', 'b', 'c']
    """
    if set(outputs) >= set(names):
        return {name: outputs[name] for name in names} | outputs
    return outputs
