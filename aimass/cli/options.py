"""Options that several commands share, declared once: the server's and a Ray deployment's.

A group is a frozen dataclass whose fields are typer options (``Annotated[type, typer.Option()]``
with a default). A command names a group as one parameter (``server: ServerOptions``);
:func:`with_options` spreads the group's fields into the command's options and hands the command
one instance, so the commands built from a group cannot drift apart in names, defaults or help:

- :class:`ServerOptions`: the V2 app (batching, limits, auth, backend options, address), for
  ``aimass serve`` (here, on uvicorn) and ``aimass scale deploy`` (on Ray Serve replicas);
- :class:`DeployOptions`: replicas and autoscaling on Ray Serve, for ``aimass scale deploy``.

Example:
    >>> parse_duration("500us"), parse_size("64MiB")
    (0.0005, 67108864)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from aimass.server.settings import ServerSettings

__all__ = [
    "MODEL_FLAGS",
    "DeployOptions",
    "ServerOptions",
    "option_groups",
    "parse_duration",
    "parse_options",
    "parse_size",
    "server_token",
    "with_options",
]


def parse_duration(text: str) -> float:
    """``"500us"``, ``"2ms"``, ``"0.01"``/``"0.01s"``, ``"5m"``, ``"12h"``, ``"7d"`` -> seconds.

    Example:
        >>> parse_duration("500us")
        0.0005
    """
    from aimass.server import settings

    try:
        return settings.parse_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"10mb"``, ``"1048576"`` -> bytes.

    Example:
        >>> parse_size("64MiB")
        67108864
    """
    from aimass.server import settings

    try:
        return settings.parse_size(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def server_token(value: str) -> str:
    """``--auth-token`` check: never start an open server because only the retired ``AIMASS_AUTH_TOKEN`` is set.

    The server's token is ``AIMASS_SERVER_TOKEN``; ``AIMASS_AUTH_TOKEN`` was shared with clients,
    which sent it to any URL a package named.
    """
    if not value and os.environ.get("AIMASS_AUTH_TOKEN"):
        raise typer.BadParameter(
            "AIMASS_AUTH_TOKEN is no longer read: set AIMASS_SERVER_TOKEN for the server's token "
            "(clients use AIMASS_CLIENT_TOKEN), or unset AIMASS_AUTH_TOKEN to serve without one"
        )
    return value


def parse_options(items: list[str]) -> dict[str, Any] | None:
    """``["session_options.intra_op_num_threads=1"]`` -> ``{"session_options": {"intra_op_num_threads": 1}}``.

    Example:
        >>> parse_options(["session_options.intra_op_num_threads=1", "allow_pickle=true"])
        {'session_options': {'intra_op_num_threads': 1}, 'allow_pickle': True}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE, e.g. session_options.intra_op_num_threads=1")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out or None


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


#: ServerOptions fields that are not server settings: how models load (``model_options()``).
MODEL_FLAGS = ("option", "trust_code")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """The V2 app's options: the same for a server here (``aimass serve``) and on Ray replicas (``scale deploy``).

    Each field is the :class:`aimass.server.settings.ServerSettings` field of the same name (but
    ``option`` and ``trust_code``, the models' load options); :meth:`settings` builds it.
    """

    # The help is shared with `scale deploy`, whose docstring says where host and port apply on Ray:
    # `aimass serve --help` says nothing of Ray.
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0 for all)")] = "127.0.0.1"
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, printed)")] = 8000
    max_batch_size: Annotated[
        int, typer.Option(help="rows per merged model call (per server process); 0 turns dynamic batching off")
    ] = 64
    max_batch_tokens: Annotated[
        int, typer.Option(help="text models: tokens per merged batch and per model call (rows sorted by length)")
    ] = 8192
    max_queue_delay: Annotated[
        str, typer.Option(help="how long a request may wait for a batch: 500us, 2ms, 0.01 (seconds)")
    ] = "0"
    instances: Annotated[
        int, typer.Option(help="model calls (merged batches) that may run at once per model, like Triton's count")
    ] = 2
    call_threads: Annotated[
        int, typer.Option(help="threads one model call may use (0: cores // instances, printed at start)")
    ] = 0
    auth_token: Annotated[
        str,
        typer.Option(
            envvar="AIMASS_SERVER_TOKEN",
            callback=server_token,
            help="require 'Authorization: Bearer TOKEN' (all but health endpoints)",
        ),
    ] = ""
    max_body_size: Annotated[str, typer.Option(help="largest request body accepted (413 above)")] = "64MiB"
    threads: Annotated[int, typer.Option(help="model threads per server process (0: CPU count + 2, at most 8)")] = 0
    option: Annotated[
        list[str] | None,
        typer.Option(help="backend option KEY=JSON for models loaded from paths, dotted keys nest; repeatable"),
    ] = None
    max_queue_size: Annotated[
        int, typer.Option(help="requests queued or running per model before 503 + Retry-After (0: no limit)")
    ] = 0
    request_timeout: Annotated[
        str, typer.Option(help="answer 504 when a request takes longer: 30s, 500ms (0: no timeout)")
    ] = "0"
    max_elements: Annotated[
        int, typer.Option(help="largest element count of one tensor, refused with 400 before allocating (0: default)")
    ] = 0
    max_loaded_models: Annotated[
        int, typer.Option(help="model versions loaded at once; > 0 loads on demand and unloads the least recently used")
    ] = 0
    memory_budget: Annotated[
        str,
        typer.Option(
            help="memory for loaded models, e.g. 8GiB, in each server process (--workers); models load on demand "
            "within it (0: no cap)"
        ),
    ] = "0"
    pin: Annotated[
        list[str] | None, typer.Option(help="under a budget: a model loaded at start and never unloaded; repeatable")
    ] = None
    warmup: Annotated[
        bool, typer.Option(help="run one warm-up call per model version as it loads (package sample or generated)")
    ] = True
    monitor: Annotated[
        str, typer.Option(help="drift monitoring of served traffic: auto (packages with a profile), all, off")
    ] = "auto"
    log_payloads: Annotated[
        str, typer.Option(help="record requests and answers as Parquet files in this directory or fsspec URL")
    ] = ""
    log_sample_rate: Annotated[float, typer.Option(help="share of requests --log-payloads records (0 to 1)")] = 1.0
    log_max_queue_bytes: Annotated[
        str,
        typer.Option(help="--log-payloads: tensor bytes queued in memory for the writer; more are dropped (0: no cap)"),
    ] = "256MiB"
    log_max_bytes: Annotated[
        str, typer.Option(help="--log-payloads: log files kept on disk, oldest removed first (0: no cap)")
    ] = "1GiB"
    log_max_age: Annotated[
        str, typer.Option(help="--log-payloads: remove log files older than this: 12h, 7d, 3600 (seconds; 0: keep)")
    ] = "7d"
    trace: Annotated[
        bool, typer.Option(help="OpenTelemetry spans (decode, queue, compute, encode) per request; needs [otel]")
    ] = False
    shadow: Annotated[
        list[str] | None,
        typer.Option(help="mirror requests of an alias to a candidate: MODEL@ALIAS=VERSION[:SHARE]; repeatable"),
    ] = None
    shadow_max_in_flight: Annotated[
        int, typer.Option(help="--shadow: runs at once; requests beyond are not mirrored (dropped and counted)")
    ] = 8
    shadow_max_bytes: Annotated[
        str, typer.Option(help="--shadow: tensor bytes the runs in flight hold; beyond, dropped and counted (0: none)")
    ] = "128MiB"
    policies: Annotated[
        str | None,
        typer.Option(help="policy file (YAML/JSON): roll canaries forward or back, update models on drift"),
    ] = None
    dashboard: Annotated[
        bool, typer.Option(help="serve the read-only dashboard at / (its data needs the same bearer token)")
    ] = True
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code",  # a flag only, as on every command that loads a model (no --no-trust-code)
            help="load packages that hold Python code (PythonModel), which runs: only from sources you trust",
        ),
    ] = False
    allowed_hosts: Annotated[
        str,
        typer.Option(
            help="Host names served, comma-separated (*.example.com, *: any); others get 400. Default: the "
            "loopback names when --host is loopback, else any (with a warning)"
        ),
    ] = ""
    allowed_origins: Annotated[
        str,
        typer.Option(
            help="web origins besides the server's own that may send POSTs, comma-separated "
            "(https://ui.example.com; *: any); others get 403"
        ),
    ] = ""

    def settings(self, **more: Any) -> ServerSettings:
        """The server's settings these flags give, each flag to the field of its name, plus ``more``
        (a command's own flags: ``workers``, ``grpc_port`` ...); a bad value raises BadParameter naming its flag.

        ``--allowed-hosts`` left empty gives the loopback names on a loopback ``--host``
        (:func:`aimass.server.browser.allowed_hosts_for`).

        Example:
            >>> ServerOptions(max_queue_delay="2ms", threads=4).settings().max_queue_delay
            0.002
        """
        from pydantic import ValidationError

        from aimass.server.browser import allowed_hosts_for
        from aimass.server.settings import ServerSettings

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in MODEL_FLAGS}
        values["allowed_hosts"] = allowed_hosts_for(self.host, _comma_list(self.allowed_hosts))
        values.update(more)
        try:
            return ServerSettings(**values)
        except ValidationError as e:
            error = e.errors(include_url=False)[0]
            name = str(error["loc"][0]) if error["loc"] else ""
            cause = error.get("ctx", {}).get("error")  # a parser's own message ("'5x' is not a duration ...")
            hint = f"'--{name.replace('_', '-')}'" if name else None
            raise typer.BadParameter(str(cause) if cause else error["msg"], param_hint=hint) from None

    def model_options(self) -> dict[str, Any] | None:
        """``--option`` items as nested backend options (``--trust-code`` is ``trust_code=true``)."""
        options = parse_options(self.option or [])
        if self.trust_code:
            options = {**(options or {}), "trust_code": True}
        return options


@dataclasses.dataclass(frozen=True)
class DeployOptions:
    """Replicas and autoscaling of a Ray Serve deployment (``aimass scale deploy``)."""

    replicas: Annotated[int, typer.Option(help="fixed number of replicas (without --max-replicas)")] = 1
    min_replicas: Annotated[int, typer.Option(help="autoscaling: fewest replicas")] = 1
    max_replicas: Annotated[int, typer.Option(help="autoscaling: most replicas; > 0 turns autoscaling on")] = 0
    target_ongoing_requests: Annotated[
        float, typer.Option(help="autoscaling: requests in flight per replica that Ray Serve aims for")
    ] = 2.0
    upscale_delay: Annotated[str, typer.Option(help="autoscaling: load must last this long before scaling up")] = "30s"
    downscale_delay: Annotated[
        str, typer.Option(help="autoscaling: idleness must last this long before scaling down")
    ] = "600s"
    max_ongoing_requests: Annotated[int, typer.Option(help="requests Ray Serve sends one replica at once")] = 64
    num_cpus: Annotated[
        float | None, typer.Option(help="CPUs each replica reserves (default: a share that fits the cluster, <= 1)")
    ] = None
    ingress: Annotated[
        str, typer.Option(help="how requests enter Ray Serve: auto (the fastest there is), haproxy, direct, proxy")
    ] = "auto"

    def scaling(self) -> dict[str, Any]:
        """Keyword arguments of :func:`aimass.scale.deploy`: replicas or autoscaling, and what each replica gets."""
        autoscaling: dict[str, Any] | None = None
        if self.max_replicas > 0:
            if self.replicas != 1:
                raise typer.BadParameter(
                    "give it (a fixed count) or --max-replicas (autoscaling), not both", param_hint="'--replicas'"
                )
            if not 0 <= self.min_replicas <= self.max_replicas:
                raise typer.BadParameter(
                    f"must be between 0 and --max-replicas {self.max_replicas}", param_hint="'--min-replicas'"
                )
            autoscaling = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": parse_duration(self.upscale_delay),
                "downscale_delay_s": parse_duration(self.downscale_delay),
            }
        elif self.replicas < 1:
            raise typer.BadParameter(f"must be >= 1, got {self.replicas}", param_hint="'--replicas'")
        return {
            "num_replicas": 1 if autoscaling else self.replicas,
            "autoscaling": autoscaling,
            "max_ongoing_requests": self.max_ongoing_requests,
            "num_cpus": self.num_cpus,
            "ingress": self.ingress,
        }


F = typing.TypeVar("F", bound=Callable[..., Any])


def option_groups(fn: Callable[..., Any]) -> dict[str, type]:
    """The parameters of ``fn`` whose annotation is an option group (a dataclass): name -> class."""
    hints = typing.get_type_hints(fn)
    return {
        name: hint
        for name, hint in hints.items()
        if name != "return" and isinstance(hint, type) and dataclasses.is_dataclass(hint)
    }


def with_options(fn: F) -> F:
    """Spread each option-group parameter of ``fn`` into its fields, one typer option each.

    The command that typer sees takes the fields as keyword options (in the group's order, where
    the group parameter stood); ``fn`` receives one instance of the group instead.
    """
    groups = option_groups(fn)
    signature = inspect.signature(fn, eval_str=True)
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        cls = groups.get(p.name)
        if cls is None:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        params.extend(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f in dataclasses.fields(cls)
        )
    names = [p.name for p in params]
    if clash := sorted({n for n in names if names.count(n) > 1}):
        raise TypeError(f"{fn.__qualname__}: option groups and parameters share the names {clash}")

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        for name, cls in groups.items():
            kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
        return fn(**kwargs)

    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command  # type: ignore[return-value]
