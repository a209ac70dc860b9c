"""The ``aimass`` command line: one entry point, one module per command group.

Each module in ``COMMANDS`` defines ``register(app: typer.Typer) -> None`` and is imported only
when the CLI starts, so ``import aimass`` stays framework-free. Every command, in every group,
runs under one error handler (:func:`aimass.cli.output.handle_errors`), applied here once the
groups are registered: one line on stderr, exit code 2 for a user error and 1 for a failure.
``python -m aimass`` is the same program as ``aimass``.

One verb per meaning: ``serve`` runs a server here, ``scale deploy`` deploys it to Ray Serve,
``predict`` predicts a file here and ``scale predict`` a dataset on Ray Data. One word per meaning
too: a flag has the name of the server setting it sets, ``--data`` is the rows a command reads,
``--batch-size`` rows per call, ``--auth-token`` the bearer token, ``-m`` only ``compress --method``,
and every command that loads a model takes ``--trust-code``. Help is plain text: no markup to eat a
``[otel]``, no ``<bool>`` after a flag.

Example (shell)::

    aimass info model.onnx
    aimass serve models/ --port 8000
    python -m aimass scale deploy model.onnx --replicas 2
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

__all__ = ["COMMANDS", "app", "commands", "main"]

# Command-group modules, registered in this order.
COMMANDS: tuple[str, ...] = (
    "aimass.cli.model",
    "aimass.cli.serve",
    "aimass.cli.store",
    "aimass.cli.compress",
    "aimass.cli.scale",
    "aimass.cli.ui",
    "aimass.cli.alerts",
)


def app() -> typer.Typer:
    """Build the typer application with every command group registered, every command under the error handler."""
    import typer

    from aimass.cli.output import handle_errors

    application = typer.Typer(
        name="aimass",
        help="Serve machine-learning models as a service from one interface.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
    )
    application.callback()(_root)
    for name in COMMANDS:
        importlib.import_module(name).register(application)
    _plain_help(application)
    for _, info in commands(application):
        if info.callback is not None:
            info.callback = handle_errors(info.callback)
    return application


def _print_version(value: bool) -> None:
    if value:
        import aimass

        typer.echo(f"aimass {aimass.__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Serve machine-learning models as a service from one interface."""


def _plain_help(application: typer.Typer) -> None:
    """Plain-text help in every group: typer's rich help reads ``[otel]`` as markup (and drops it) and
    shows ``<bool>`` after every flag; the plain formatter does neither."""
    for group in application.registered_groups:
        if group.typer_instance is not None:
            group.typer_instance.rich_markup_mode = None
            _plain_help(group.typer_instance)


def commands(application: typer.Typer, prefix: str = "") -> list[tuple[str, typer.models.CommandInfo]]:
    """Every registered command of ``application`` and its groups: ``("scale deploy", CommandInfo)``, ..."""
    out = []
    for info in application.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        out.append((f"{prefix}{name}", info))
    for group in application.registered_groups:
        if group.typer_instance is not None:
            out.extend(commands(group.typer_instance, f"{prefix}{group.name} "))
    return out


def main() -> None:
    """Console-script entry point (also ``python -m aimass``)."""
    from aimass.cli.output import stdout_gone

    try:
        app()(prog_name="aimass")
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (| head) after the last write: say nothing
            stdout_gone()
