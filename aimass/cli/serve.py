"""``aimass serve``: the V2 model server, here, over a repository directory or a list of models.

Running a server is ``serve``; deploying the same server to Ray Serve replicas is ``aimass scale
deploy``, which takes the same server options (:class:`aimass.cli.options.ServerOptions`). Every
flag is the :class:`aimass.server.ServerSettings` field of its name (``--threads`` is ``threads``,
``--workers`` is ``workers``), which ``create_app`` and ``serve_workers`` take as they are.

Example (shell)::

    aimass serve models/                              # <models>/<name>/<version>/ packages
    aimass serve fraud=pkg/fraud mlp.onnx --port 8000 --max-batch-size 64 --max-queue-delay 500us
    aimass serve models/ --grpc-port 8001             # V2 over gRPC too, beside HTTP
    aimass serve models/ --host 0.0.0.0 --allowed-hosts api.example.com --auth-token "$TOKEN"
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.options import ServerOptions, with_options

# The parsers live in aimass.cli.options; they stay importable from here.
__all__ = ["register", "serve", "warn_exposure", "warn_layout"]

log = logging.getLogger("aimass.server")


def warn_exposure(
    host: str,
    *,
    token: bool,
    allowed_hosts: list[str] | tuple[str, ...] | None,
    exposed: str = "run, load and unload models",
) -> list[str]:
    """Print (to stderr) and log the warnings of a server listening on ``host``; returns them.

    Example:
        >>> warn_exposure("127.0.0.1", token=False, allowed_hosts=("localhost",))
        []
    """
    from aimass.server.browser import exposure_warnings

    warnings = exposure_warnings(host, token=token, allowed_hosts=allowed_hosts, exposed=exposed)
    for text in warnings:
        typer.echo(f"warning: {text}", err=True)
        if log.hasHandlers():  # without any, logging would print the same line a second time
            log.warning(text)
    return warnings


@with_options
def serve(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="a repository directory (<repo>/<name>/<version>/), or models: file, package, or NAME=PATH"
        ),
    ],
    server: ServerOptions,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    grpc_port: Annotated[
        int,
        typer.Option(help="also serve V2 over gRPC on this port, same process and models (0: off); limits as HTTP"),
    ] = 0,
    workers: Annotated[
        int,
        typer.Option(help="server processes sharing the port(s), each with its own models; a crashed one is restarted"),
    ] = 1,
    header_timeout: Annotated[
        str, typer.Option(help="close a connection whose request headers take longer: 10s, 500ms (0: no limit)")
    ] = "10s",
    body_timeout: Annotated[
        str,
        typer.Option(help="close a connection whose request body takes longer after its headers (0: no limit)"),
    ] = "60s",
    ray: Annotated[bool, typer.Option(hidden=True, help="moved: aimass scale deploy")] = False,
) -> None:
    """Serve models over the Open Inference Protocol (KServe V2 / Triton HTTP) in this process."""
    if ray:  # the former `serve --ray`: one verb per meaning, so say where it went
        raise ValueError("--ray is gone: aimass serve runs the server here, `aimass scale deploy` deploys it to Ray")
    from aimass.server import create_app
    from aimass.server import serve as run
    from aimass.server.compute import plan_compute

    settings = server.settings(
        log_level=log_level,
        grpc_port=grpc_port,
        workers=workers,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
    )
    token = bool(settings.auth_token or os.environ.get("AIMASS_SERVER_TOKEN"))
    warn_exposure(settings.host, token=token, allowed_hosts=settings.allowed_hosts)
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
    warn_layout(repository, models)
    from aimass.server.listen import bind, ensure_free
    from aimass.server.listen import port as bound_port

    # Bind before saying anything: a busy port is an error (exit 1), not "serving" then uvicorn's exit 3;
    # and --port 0 prints the port it got.
    sock = bind(settings.host, settings.port)
    try:
        if settings.grpc_port:
            ensure_free(settings.host, settings.grpc_port, what="gRPC")
        port = bound_port(sock)
        settings = settings.model_copy(update={"port": port})
        grpc_note = f" and grpc://{settings.host}:{settings.grpc_port}" if settings.grpc_port else ""
        if settings.workers > 1:
            from aimass.server.workers import serve_workers

            typer.echo(
                f"aimass serving {sorted(models) or str(repository)} on http://{settings.host}:{port}/v2"
                + grpc_note
                + f" from {settings.workers} worker processes (batching: max_batch_size={settings.max_batch_size})"
            )
            serve_workers(
                models or None,
                repository=repository,
                settings=settings,
                model_options=server.model_options(),
                sock=sock,
            )
            return
        app = create_app(models or None, repository=repository, model_options=server.model_options(), settings=settings)
        repo = app.repository
        names = sorted(repo.sources()) if repo.lazy else sorted({m.name for m in repo.loaded()})
        if repo.lazy:  # under a budget: models load on their first request
            typer.echo(f"models load on demand within {repo.budget.describe()}; {len(repo.loaded())} loaded at start")
        typer.echo(
            f"aimass serving {names} on http://{settings.host}:{port}/v2{grpc_note} "
            f"(batching: max_batch_size={settings.max_batch_size})"
        )
        typer.echo(plan_compute(settings.instances, settings.call_threads).describe())
        run(
            app,
            host=settings.host,
            port=port,
            log_level=settings.log_level,
            grpc_port=settings.grpc_port or None,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            sock=sock,
        )
    finally:
        sock.close()


def warn_layout(repository: Path | None, models: dict[str, str]) -> list[str]:
    """Print (to stderr) and log what looks wrong in what is served: nothing at all, or an odd layout.

    Example:
        >>> warn_layout(None, {"mlp": "mlp.onnx"})
        []
    """
    from aimass.server.layout import layout_warnings

    warnings = layout_warnings(repository, models)
    for text in warnings:
        typer.echo(f"warning: {text}", err=True)
        if log.hasHandlers():
            log.warning(text)
    return warnings


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
