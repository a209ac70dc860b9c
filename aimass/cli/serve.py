"""``aimass serve``: the V2 model server, here, over a repository directory or a list of models.

Running a server is ``serve``; deploying the same server to Ray Serve replicas is ``aimass scale
deploy``, which takes the same server options (:class:`aimass.cli.options.ServerOptions`).

Example (shell)::

    aimass serve models/                              # <models>/<name>/<version>/ packages
    aimass serve fraud=pkg/fraud mlp.onnx --port 8000 --max-batch-size 64 --max-queue-delay 500us
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.options import ServerOptions, with_options

# The parsers live in aimass.cli.options; they stay importable from here.
__all__ = ["register", "serve"]


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
    ray: Annotated[bool, typer.Option(hidden=True, help="moved: aimass scale deploy")] = False,
) -> None:
    """Serve models over the Open Inference Protocol (KServe V2 / Triton HTTP) in this process."""
    if ray:  # the former `serve --ray`: one verb per meaning, so say where it went
        raise ValueError("--ray is gone: aimass serve runs the server here, `aimass scale deploy` deploys it to Ray")
    from aimass.server import create_app
    from aimass.server import serve as run

    options = server.app_options()
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
    app = create_app(models or None, repository=repository, model_options=server.model_options(), **options)
    names = sorted({m.name for m in app.repository.loaded()})
    typer.echo(
        f"aimass serving {names} on http://{server.host}:{server.port}/v2 "
        f"(batching: max_batch_size={server.max_batch_size})"
    )
    run(app, host=server.host, port=server.port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
