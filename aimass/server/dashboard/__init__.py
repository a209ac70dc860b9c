"""A read-only dashboard for the model library and the model server, in the browser and in notebooks.

``aimass serve`` shows it at ``/``; ``aimass ui <library root or s3:// URL>`` shows the same pages
for a library without a model server. Pages: models and versions (schema, backend, size, created,
metrics and evaluation, gates, the compression/conversion report), aliases with canary weights,
the live service (request rate, p50/p99, queue vs compute, batch sizes, errors per model
version over the last minutes) and drift per feature for monitored models. Charts are SVG drawn
on the server by :mod:`aimass.charts` (no JavaScript library, no CDN, works offline); the page's
script only fetches JSON and lays it out. See docs/dashboard.md.

* :mod:`~aimass.server.dashboard.catalog`: what is listed (library and served models) as JSON;
* :mod:`~aimass.server.dashboard.live`: the ring buffer of samples of the server's metrics;
* :mod:`~aimass.server.dashboard.routes`: the routes, the token check, the ``aimass ui`` app;
* ``static/``: the page, its script and style sheet (package data).

Example:
    >>> from aimass.store import Store
    >>> app = ui_app(Store("models/"))          # doctest: +SKIP
    >>> # uvicorn.run(app, port=8080)  or, from a shell: aimass ui models/
"""

from __future__ import annotations

from aimass.server.dashboard.catalog import Catalog
from aimass.server.dashboard.live import LiveSampler, quantile
from aimass.server.dashboard.routes import Dashboard, server_dashboard, ui_app

__all__ = ["Catalog", "Dashboard", "LiveSampler", "quantile", "server_dashboard", "ui_app"]
