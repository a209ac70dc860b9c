"""``aimass info``: what a model is (backend, schema, device)."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def info(
    model: str = typer.Argument(..., help="model file, package directory or URL"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """Show a model's backend, device and schema."""
    from aimass import Model

    m = Model.load(model)
    if as_json:
        typer.echo(
            json.dumps(
                {"name": m.name, "backend": m.backend_name, "device": m.device, "schema": m.schema.model_dump()},
                indent=2,
            )
        )
        return
    typer.echo(f"name     {m.name}\nbackend  {m.backend_name}\ndevice   {m.device}")
    for kind, specs in (("input ", m.schema.inputs), ("output", m.schema.outputs)):
        for t in specs:
            typer.echo(f"{kind}   {t.name:<20} {t.describe()}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)
