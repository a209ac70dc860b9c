"""``aimass serve``: the V2 model server over a repository directory or a list of models.

Example (shell)::

    aimass serve models/                              # <models>/<name>/<version>/ packages
    aimass serve fraud=pkg/fraud mlp.onnx --port 8000 --max-batch-size 64 --max-queue-delay 500us
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["parse_duration", "parse_options", "parse_size", "register", "server_token"]

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)?\s*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_duration(text: str) -> float:
    """``"500us"``, ``"2ms"``, ``"0.01"``/``"0.01s"`` -> seconds.

    Example:
        >>> parse_duration("500us")
        0.0005
    """
    m = _DURATION.match(text)
    if m is None:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 500us, 2ms or 0.01 (seconds)")
    value, unit = float(m[1]), m[2] or "s"
    return value / {"us": 1e6, "µs": 1e6, "ms": 1e3, "s": 1.0}[unit]


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"10mb"``, ``"1048576"`` -> bytes.

    Example:
        >>> parse_size("64MiB")
        67108864
    """
    m = _SIZE.match(text)
    if m is None:
        raise typer.BadParameter(f"{text!r} is not a size: use e.g. 64MiB, 10MB or a number of bytes")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "b").lower()])


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


def serve(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="a repository directory (<repo>/<name>/<version>/), or models: file, package, or NAME=PATH"
        ),
    ],
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="rows per merged model call; 0 turns dynamic batching off")] = 64,
    max_queue_delay: Annotated[
        str, typer.Option(help="how long a request may wait for a batch: 500us, 2ms, 0.01 (seconds)")
    ] = "0",
    instances: Annotated[
        int, typer.Option(help="model calls (merged batches) that may run at once per model, like Triton's count")
    ] = 2,
    auth_token: Annotated[
        str,
        typer.Option(
            envvar="AIMASS_SERVER_TOKEN",
            callback=server_token,
            help="require 'Authorization: Bearer TOKEN' (all but health endpoints)",
        ),
    ] = "",
    max_body_size: Annotated[str, typer.Option(help="largest request body accepted (413 above)")] = "64MiB",
    workers: Annotated[int, typer.Option(help="model worker threads (0: CPU count + 2, at most 8)")] = 0,
    option: Annotated[
        list[str] | None,
        typer.Option(help="backend option KEY=JSON for models loaded from paths, dotted keys nest; repeatable"),
    ] = None,
    max_queue_size: Annotated[
        int, typer.Option(help="requests queued or running per model before 503 + Retry-After (0: no limit)")
    ] = 0,
    request_timeout: Annotated[
        str, typer.Option(help="answer 504 when a request takes longer: 30s, 500ms (0: no timeout)")
    ] = "0",
    max_elements: Annotated[
        int, typer.Option(help="largest element count of one tensor, refused with 400 before allocating (0: default)")
    ] = 0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    ray: Annotated[
        bool, typer.Option(help="serve on Ray Serve replicas ([ray] extra; RAY_ADDRESS picks a cluster)")
    ] = False,
    replicas: Annotated[int, typer.Option(help="with --ray: replicas (autoscaling: aimass scale serve)")] = 1,
) -> None:
    """Serve models over the Open Inference Protocol (KServe V2 / Triton HTTP)."""
    # Request limits, the same whether the app runs here or in Ray Serve replicas.
    limits: dict[str, Any] = {
        "max_body_size": parse_size(max_body_size),
        "max_queue_size": max_queue_size,
        "request_timeout": parse_duration(request_timeout) or None,
        **({"max_elements": max_elements} if max_elements else {}),
    }
    if ray:  # the same app on Ray Serve replicas: aimass.cli.scale / aimass.scale
        from aimass.cli.scale import model_sources, run_on_ray

        return run_on_ray(
            model_sources(sources),
            num_replicas=replicas,
            host=host,
            port=port,
            max_batch_size=max_batch_size,
            max_queue_delay=parse_duration(max_queue_delay),
            max_concurrency=instances,
            auth_token=auth_token or None,
            model_options=parse_options(option or []),
            app_options=limits,
        )
    from aimass.server import create_app, serve

    repository = None
    models: dict[str, str] = {}
    for src in sources:
        name, sep, path = src.partition("=")
        if sep:
            models[name] = path
            continue
        p = Path(src)
        if p.is_dir() and not (p / "aimass.json").is_file():
            if repository is not None:
                raise typer.BadParameter(f"only one repository directory: got {repository} and {src}")
            repository = p
        else:
            models[p.stem if p.is_file() else p.name] = src
    app = create_app(
        models or None,
        repository=repository,
        max_batch_size=max_batch_size,
        max_queue_delay=parse_duration(max_queue_delay),
        max_concurrency=instances,
        auth_token=auth_token or None,
        workers=workers or None,
        model_options=parse_options(option or []),
        **limits,
    )
    names = sorted({m.name for m in app.repository.loaded()})
    typer.echo(f"aimass serving {names} on http://{host}:{port}/v2 (batching: max_batch_size={max_batch_size})")
    serve(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
