"""The ``aimass`` command line: one entry point, one module per command group.

Each module in ``COMMANDS`` defines ``register(app: typer.Typer) -> None`` and is imported only
when the CLI starts, so ``import aimass`` stays framework-free.

Example (shell)::

    aimass info model.onnx
    aimass serve models/ --port 8000
"""

from __future__ import annotations

import importlib

__all__ = ["COMMANDS", "app", "main"]

# Command-group modules, registered in this order.
COMMANDS: tuple[str, ...] = (
    "aimass.cli.model",
    "aimass.cli.serve",
    "aimass.cli.store",
    "aimass.cli.compress",
    "aimass.cli.scale",
)


def app() -> object:
    """Build the typer application with every command group registered."""
    import typer

    application = typer.Typer(
        name="aimass",
        help="Serve machine-learning models as a service from one interface.",
        no_args_is_help=True,
        add_completion=False,
    )
    for name in COMMANDS:
        importlib.import_module(name).register(application)
    return application


def main() -> None:
    """Console-script entry point."""
    app()()  # type: ignore[operator]
