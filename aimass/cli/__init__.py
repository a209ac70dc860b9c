"""The ``aimass`` command line: one entry point, one module per command group.

Each module in ``COMMANDS`` defines ``register(app: typer.Typer) -> None`` and is imported only
when the CLI starts, so ``import aimass`` stays framework-free. Every command, in every group,
runs under one error handler (:func:`aimass.cli.output.handle_errors`), applied here once the
groups are registered: one line on stderr, exit code 2 for a user error and 1 for a failure.
``python -m aimass`` is the same program as ``aimass``.

One verb per meaning: ``serve`` runs a server here, ``scale deploy`` deploys it to Ray Serve,
``predict`` predicts a file here and ``scale predict`` a dataset on Ray Data.

Example (shell)::

    aimass info model.onnx
    aimass serve models/ --port 8000
    python -m aimass scale deploy model.onnx --replicas 2
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    )
    for name in COMMANDS:
        importlib.import_module(name).register(application)
    for _, info in commands(application):
        if info.callback is not None:
            info.callback = handle_errors(info.callback)
    return application


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
    app()(prog_name="aimass")
