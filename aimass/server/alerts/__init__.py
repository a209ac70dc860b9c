"""Prometheus alerting rules and a Grafana dashboard for the metrics an aimass server exports.

Shipped with the package and printed by ``aimass alerts rules`` / ``aimass alerts dashboard``:
``rules.yml`` (the Prometheus rule-file format: error rate, p99 latency, 503s from full queues,
load failures and evictions, input drift, a canary worse than its stable version, rollbacks and
refused updates) and ``dashboard.json`` (Grafana: the same series, with the policy decisions as
annotations). Every metric they name is one a running server exports (tested).

Example:
    >>> from aimass.server.alerts import rules, metric_names
    >>> "alert: AimassHighErrorRate" in rules()
    True
    >>> "aimass_requests_total" in metric_names()
    True
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["dashboard", "metric_names", "rules"]

_METRIC = re.compile(r"\baimass_[a-z0-9_]+\b")


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def rules() -> str:
    """The Prometheus alerting rules (YAML), as shipped.

    Example:
        >>> rules().startswith("#")
        True
    """
    return _read("rules.yml")


def dashboard() -> str:
    """The Grafana dashboard (JSON), as shipped.

    Example:
        >>> '"uid": "aimass-server"' in dashboard()
        True
    """
    return _read("dashboard.json")


def metric_names() -> set[str]:
    """Every ``aimass_*`` series name the rules and the dashboard use.

    Example:
        >>> sorted(metric_names())[0]
        'aimass_canary_error_rate_delta'
    """
    return set(_METRIC.findall(rules())) | set(_METRIC.findall(dashboard()))
