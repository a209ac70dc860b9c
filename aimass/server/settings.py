"""The server's settings: one frozen object, one name per knob, from the CLI flag to the keyword.

``aimass serve --max-batch-size 8 --threads 4`` and ``create_app(models, max_batch_size=8,
threads=4)`` (or ``create_app(models, settings=ServerSettings(max_batch_size=8, threads=4))``)
name the same knobs the same way; ``aimass scale deploy`` and :func:`aimass.scale.deploy` build
the same object for each Ray replica. ``threads`` is a process's model thread pool; ``workers``
only ever counts server processes (MLServer's ``settings.py`` is the pattern).

Durations and sizes may be given as the CLI writes them (``"500us"``, ``"64MiB"``) or as numbers
(seconds, bytes). Knobs of one process's app (batching, limits, budget, monitors, logs, shadow
traffic, tracing, browser rules) are read by :func:`aimass.server.create_app`; ``host``, ``port``,
``grpc_port``, ``workers``, ``log_level`` and the request deadlines by whatever runs it
(:func:`aimass.server.serve`, :func:`aimass.server.workers.serve_workers`, Ray Serve).

Example:
    >>> s = ServerSettings(max_queue_delay="500us", memory_budget="8GiB", threads=4)
    >>> s.max_queue_delay, s.memory_budget, s.threads
    (0.0005, 8589934592, 4)
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from aimass.protocol.v2 import DEFAULT_MAX_ELEMENTS
from aimass.server import payload_log as payload_logs
from aimass.server import shadow as shadows
from aimass.server.deadlines import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT
from aimass.server.payload_log import PayloadLog
from aimass.server.policies import Policies, load_policies
from aimass.server.shadow import ShadowRule, parse_shadow
from aimass.server.token_batching import DEFAULT_MAX_BATCH_TOKENS
from aimass.server.tracing import ServerTracing

__all__ = ["DEFAULT_MAX_BODY_SIZE", "RENAMED", "ServerSettings", "build_settings", "parse_duration", "parse_size"]

DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

#: Keywords of ``create_app`` / ``aimass.scale.serve`` before the settings had one vocabulary -> the
#: setting's name (still accepted, with a DeprecationWarning). ``create_app(workers=)`` is not among
#: them: it meant threads, and ``workers`` now only counts processes, so it is refused instead.
RENAMED: dict[str, str] = {
    "max_concurrency": "instances",
    "pinned": "pin",
    "tracing": "trace",
    "payload_log": "log_payloads",
    "payload_sample_rate": "log_sample_rate",
    "payload_max_queue_bytes": "log_max_queue_bytes",
    "payload_max_bytes": "log_max_bytes",
    "payload_max_age": "log_max_age",
}

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s|min|m|h|d)?\s*$")
# unit -> (multiplier, divisor): sub-second units divide, so "500us" is exactly 500 / 1e6
_DURATION_UNITS = {"us": (1, 1e6), "µs": (1, 1e6), "ms": (1, 1e3), "s": (1, 1)}
_DURATION_UNITS.update({"min": (60, 1), "m": (60, 1), "h": (3600, 1), "d": (86400, 1)})
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_duration(text: str) -> float:
    """``"500us"``, ``"2ms"``, ``"0.01"``/``"0.01s"``, ``"5m"``, ``"12h"``, ``"7d"`` -> seconds (ValueError otherwise).

    Example:
        >>> parse_duration("500us")
        0.0005
    """
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 500us, 2ms, 0.01 (seconds), 5m, 12h or 7d")
    multiplier, divisor = _DURATION_UNITS[m[2] or "s"]
    return float(m[1]) * multiplier / divisor


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"10mb"``, ``"1048576"`` -> bytes (ValueError otherwise).

    Example:
        >>> parse_size("64MiB")
        67108864
    """
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size: use e.g. 64MiB, 10MB or a number of bytes")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "b").lower()])


def _seconds(value: Any) -> Any:
    if value is None:  # "no timeout" as create_app used to write it
        return 0.0
    return parse_duration(value) if isinstance(value, str) else value


def _bytes(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """``"a, b"`` -> ``("a", "b")``; None -> ``()``; any other collection as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return tuple(value)


def _hosts(value: Any) -> Any:
    return None if value is None or value == "" else _names(value)


def _rules(value: Any) -> Any:
    if value is None:
        return ()
    return tuple(parse_shadow(v) if isinstance(v, str) else v for v in value)


def _policies(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str | os.PathLike):  # a policy file: read once, when the settings are made
        return load_policies(value)
    return value


def _log_target(value: Any) -> Any:
    if value is None or value == "":
        return None
    return Path(value) if isinstance(value, os.PathLike) and not isinstance(value, PayloadLog) else value


def _or_none(value: Any) -> Any:
    return None if value == "" else value


def _or_zero(value: Any) -> Any:
    return 0 if value is None else value


def _elements(value: Any) -> Any:
    return DEFAULT_MAX_ELEMENTS if value in (0, None) else value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=0)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


class ServerSettings(BaseModel):
    """Every knob of the V2 server, each under the name of its ``aimass serve`` flag (``--max-batch-size``).

    Where it listens and how it runs: ``host``, ``port``, ``grpc_port`` (0: no gRPC), ``workers``
    (server processes sharing the port), ``threads`` (model threads per process; 0: CPU count + 2,
    at most 8), ``log_level``, ``header_timeout`` / ``body_timeout`` (seconds a request's headers /
    body may take to arrive; 0: no limit).

    Batching and limits: ``max_batch_size`` (rows per merged call; 0: no dynamic batching),
    ``max_batch_tokens`` (text models: tokens per merged batch and per call, :mod:`aimass.server.token_batching`),
    ``max_queue_delay`` (seconds a request may wait for a batch), ``instances`` (model calls at once
    per model version, Triton's instance count), ``call_threads`` (threads one model call may use;
    0: cores // instances, :mod:`aimass.server.compute`), ``max_queue_size`` (requests held per version
    before 503; 0: no limit), ``request_timeout`` (seconds before 504; 0: none), ``max_body_size``
    (bytes, 413 above), ``max_elements`` (per tensor, 400 from the shape alone; 0: the default).

    Models: ``max_loaded_models`` / ``memory_budget`` (bytes) > 0 load versions on demand and
    unload the least recently used; ``pin`` names load at start and stay; ``warmup`` runs one call
    per version as it loads; ``monitor`` (``auto``/``all``/``off``) feeds served traffic to drift
    monitors; ``dashboard`` serves the read-only pages at ``/``.

    Records: ``log_payloads`` (a directory, an fsspec URL or a
    :class:`~aimass.server.payload_log.PayloadLog`) records a ``log_sample_rate`` share of requests
    within ``log_max_queue_bytes`` in memory, ``log_max_bytes`` on disk and ``log_max_age`` seconds;
    ``shadow`` rules (:class:`~aimass.server.shadow.ShadowRule` or ``"MODEL@ALIAS=VERSION[:SHARE]"``)
    mirror traffic to candidates, at most ``shadow_max_in_flight`` runs holding ``shadow_max_bytes``;
    ``trace`` (True or a :class:`~aimass.server.tracing.ServerTracing`) makes OpenTelemetry spans.
    ``policies`` (a :class:`~aimass.server.policies.Policies` or a policy file) lets the server roll
    canaries forward or back and update models on drift (:mod:`aimass.server.policies`).

    Access: ``auth_token`` (None: ``AIMASS_SERVER_TOKEN`` when set) requires ``Authorization: Bearer``
    on all but health endpoints (never shown in ``repr``); ``allowed_hosts`` (None: any Host) and
    ``allowed_origins`` (besides the server's own) are the browser rules (:mod:`aimass.server.browser`).

    Example:
        >>> ServerSettings(shadow=["fraud@production=4:0.2"]).shadow[0].share
        0.2
        >>> ServerSettings(max_batch_size=8).model_copy(update={"threads": 2}).threads
        2
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # Where and how it runs (read by what runs the app, not by create_app).
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: Annotated[int, BeforeValidator(_or_zero)] = 0
    workers: Annotated[int, Field(ge=1)] = 1
    threads: Annotated[int, Field(ge=0)] = 0
    log_level: str = "warning"
    header_timeout: Seconds = DEFAULT_HEADER_TIMEOUT
    body_timeout: Seconds = DEFAULT_BODY_TIMEOUT
    # Batching and limits.
    max_batch_size: Annotated[int, Field(ge=0)] = 64
    max_batch_tokens: Annotated[int, Field(ge=1)] = DEFAULT_MAX_BATCH_TOKENS
    max_queue_delay: Seconds = 0.0
    instances: Annotated[int, Field(ge=1)] = 2
    call_threads: Annotated[int, Field(ge=0)] = 0
    max_queue_size: Annotated[int, Field(ge=0)] = 0
    request_timeout: Seconds = 0.0
    max_body_size: Bytes = DEFAULT_MAX_BODY_SIZE
    max_elements: Annotated[int, BeforeValidator(_elements), Field(ge=1)] = DEFAULT_MAX_ELEMENTS
    # Models.
    max_loaded_models: Annotated[int, Field(ge=0)] = 0
    memory_budget: Bytes = 0
    pin: Names = ()
    warmup: bool = True
    monitor: str = "auto"
    dashboard: bool = True
    # Records: payload logs, shadow traffic, traces.
    log_payloads: Annotated[str | Path | PayloadLog | None, BeforeValidator(_log_target)] = None
    log_sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    log_max_queue_bytes: Bytes = payload_logs.DEFAULT_MAX_QUEUE_BYTES
    log_max_bytes: Bytes = payload_logs.DEFAULT_MAX_BYTES
    log_max_age: Seconds = payload_logs.DEFAULT_MAX_AGE
    shadow: Annotated[tuple[ShadowRule, ...], BeforeValidator(_rules)] = ()
    shadow_max_in_flight: Annotated[int, Field(ge=1)] = shadows.DEFAULT_MAX_IN_FLIGHT
    shadow_max_bytes: Bytes = shadows.DEFAULT_MAX_BYTES
    trace: bool | ServerTracing = False
    # Monitoring that acts: canary analyses and drift-triggered updates (aimass.server.policies).
    policies: Annotated[Policies | None, BeforeValidator(_policies)] = None
    # Access.
    auth_token: Annotated[str | None, BeforeValidator(_or_none), Field(repr=False)] = None
    allowed_hosts: Annotated[tuple[str, ...] | None, BeforeValidator(_hosts)] = None
    allowed_origins: Names = ()


def build_settings(settings: ServerSettings | None, knobs: Mapping[str, Any], *, where: str) -> ServerSettings:
    """``settings`` (default: the defaults) with ``knobs`` (settings' names) applied, validated again.

    The keywords of ``create_app``, ``serve_workers`` and ``aimass.scale.deploy`` go through here:
    an unknown name is a TypeError naming ``where`` and the settings; a name from before the one
    vocabulary (:data:`RENAMED`) still works for one release, with a DeprecationWarning.

    Example:
        >>> build_settings(None, {"max_batch_size": 8}, where="create_app").max_batch_size
        8
    """
    updates: dict[str, Any] = {}
    for name, value in knobs.items():
        new = RENAMED.get(name)
        if new is not None:
            if new in knobs:
                raise TypeError(f"{where}() got both {name!r} and {new!r}: they are one setting, {new!r}")
            warnings.warn(
                f"{where}({name}=...) is now {where}({new}=...), the name of its aimass serve flag",
                DeprecationWarning,
                stacklevel=3,
            )
            name = new
        elif name not in ServerSettings.model_fields:
            raise TypeError(
                f"{where}() got an unexpected keyword argument {name!r}; "
                f"the settings are {', '.join(ServerSettings.model_fields)}"
            )
        updates[name] = value
    if not updates:
        return settings or ServerSettings()
    base = settings or ServerSettings()
    # Validated again (model_copy would not): "500us" becomes seconds, a bad value is refused here.
    return ServerSettings(**{**{name: getattr(base, name) for name in ServerSettings.model_fields}, **updates})
