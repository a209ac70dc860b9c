"""``aimass alerts rules | dashboard``: the Prometheus alerting rules and the Grafana dashboard that ship with aimass.

Example (shell)::

    aimass alerts rules > /etc/prometheus/rules/aimass.yml
    aimass alerts dashboard > aimass-dashboard.json      # Grafana: Dashboards > Import
"""

from __future__ import annotations

import typer

__all__ = ["register"]

alerts_app = typer.Typer(help="Prometheus alert rules and a Grafana dashboard for the server's metrics.")


@alerts_app.command("rules")
def rules() -> None:
    """Print the Prometheus alerting rules (YAML) for the server's metrics."""
    from aimass.server.alerts import rules as text

    typer.echo(text(), nl=False)


@alerts_app.command("dashboard")
def dashboard() -> None:
    """Print the Grafana dashboard (JSON) for the server's metrics."""
    from aimass.server.alerts import dashboard as text

    typer.echo(text(), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
