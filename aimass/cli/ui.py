"""``aimass ui``: the dashboard of a model library, without a model server.

The same pages ``aimass serve`` shows at ``/`` (models, versions, aliases with canary weights,
gates, metrics, compression/conversion reports), read from a library directory or an ``s3://``
URL. Read-only. With ``AIMASS_SERVER_TOKEN`` (or ``--auth-token``, as ``aimass serve``) set, the data needs
``Authorization: Bearer <token>``; the page asks for it once and keeps it for the browser tab.

Example (shell)::

    aimass ui                                  # the library at $AIMASS_STORE (default ~/.aimass/models)
    aimass ui s3://bucket/models --port 8080
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.model_options import renamed
from aimass.cli.options import server_token

__all__ = ["register", "ui"]


def ui(
    root: Annotated[
        str | None,
        typer.Argument(envvar="AIMASS_STORE", help="library root: a directory or an s3:// URL"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    auth_token: Annotated[
        str,
        typer.Option(
            envvar="AIMASS_SERVER_TOKEN",
            callback=server_token,
            help="require 'Authorization: Bearer TOKEN' for the library's data",
        ),
    ] = "",
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    allowed_hosts: Annotated[
        str,
        typer.Option(
            help="Host names served, comma-separated (*: any); default: the loopback names when --host is "
            "loopback, else any (with a warning)"
        ),
    ] = "",
    token: Annotated[str | None, typer.Option("--token", hidden=True, help="former --auth-token")] = None,
) -> None:
    """Show the model library in the browser: versions, aliases, metrics, reports (read-only)."""
    from aimass.cli.serve import warn_exposure
    from aimass.server import serve
    from aimass.server.browser import allowed_hosts_for
    from aimass.server.dashboard import ui_app
    from aimass.server.listen import bind
    from aimass.server.listen import port as bound_port
    from aimass.store import Store

    # The former flag wins over $AIMASS_SERVER_TOKEN, as a flag does.
    secret = renamed(None, token, new="--auth-token", old="--token") or auth_token

    if root is not None and "://" not in root and not Path(root).expanduser().is_dir():
        raise typer.BadParameter(f"no library directory {root!r}")
    store = Store(root)
    hosts = allowed_hosts_for(host, [h for h in allowed_hosts.split(",") if h.strip()])
    app = ui_app(store, token=secret or None, allowed_hosts=hosts)
    warn_exposure(host, token=bool(secret), allowed_hosts=hosts, exposed="read the model library")
    sock = bind(host, port)  # before the line below: a busy port is an error, --port 0 the port it got
    typer.echo(f"aimass ui: the library at {store.root} on http://{host}:{bound_port(sock)}/")
    serve(app, host=host, port=bound_port(sock), log_level=log_level, sock=sock)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
