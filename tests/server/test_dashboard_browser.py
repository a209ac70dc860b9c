"""The dashboard in a real headless Chromium (the system's), driven by Playwright.

One model server (uvicorn on a real socket, with a bearer token) over the library that
test_dashboard.py builds. Each test checks that pages load without console errors and show
what the library and the server hold. Skipped, with the reason, when Playwright or a Chromium
binary is missing (``scripts/test.sh`` installs the ``chromium`` package where apt-get exists;
``AIMASS_CHROMIUM`` names another binary). ``AIMASS_SCREENSHOTS=docs/images`` writes the
screenshots docs/dashboard.md shows; otherwise they go to a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import dataset
from serving import live_server
from test_dashboard import TOKEN, build_library

from aimass.server import create_app
from aimass.server.dashboard import ui_app
from aimass.store import Store

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright (pip install -r requirements/dev.in)"
)


def _chromium() -> str | None:
    names = (os.environ.get("AIMASS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome")
    for name in names:
        found = name and (shutil.which(name) or (name if os.access(name, os.X_OK) else None))
        if found:
            return found
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip(
        "no Chromium binary (apt-get install chromium, or set AIMASS_CHROMIUM): browser tests skipped",
        allow_module_level=True,
    )

VIEWPORT = {"width": 1100, "height": 760}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.getbasetemp() / "dashboard-library" / "models")


@pytest.fixture(scope="module")
def server(library: Path) -> Iterator[str]:
    app = create_app(repository=library, auth_token=TOKEN, max_batch_size=8)
    with live_server(app) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("AIMASS_SCREENSHOTS")
    return Path(target) if target else tmp_path_factory.mktemp("screenshots")


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base: str, token: str | None) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        if token is not None:  # what the login form stores, set before any script of the page runs
            self.context.add_init_script(f"sessionStorage.setItem('aimass.dashboard.token', {token!r})")
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, hash_: str) -> Any:
        self.page.goto(f"{self.base}/{hash_}")
        self.page.wait_for_selector(f'body[data-ready="{hash_}"]', state="attached", timeout=10_000)
        return self.page

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)


@pytest.fixture
def tab(browser: Any, server: str) -> Iterator[Page]:
    page = Page(browser, server, TOKEN)
    yield page
    page.context.close()


def test_model_list_shows_the_library(tab: Page, library: Path, shots: Path) -> None:
    page = tab.open("#/")
    rows = page.locator("#models-table tbody tr")
    assert rows.all_inner_texts()[0].startswith("churn")
    fraud = rows.nth(1).inner_text()
    assert fraud.startswith("fraud") and "production → v1 90%, v2 10%" in fraud
    assert page.locator("#models-charts svg.aimass-chart").count() == 1 + len(Store(library).info("fraud", 1).metrics)
    tab.shot(shots / "dashboard-models.png")
    assert tab.errors == []


def test_model_and_version_pages_show_details(tab: Page, library: Path, shots: Path) -> None:
    page = tab.open("#/m/fraud")
    assert "production" in page.locator("#aliases-table").inner_text()
    assert page.locator("#model-charts svg").first.get_attribute("aria-label") == "traffic per alias"
    tab.shot(shots / "dashboard-model.png")
    page = tab.open("#/m/fraud/2")
    info = Store(library).info("fraud", 2)
    assert page.locator('[data-fact="backend"]').inner_text() == info.backend
    assert page.locator("#schema-table").inner_text().split("\n")[1].split("\t") == ["input", "x", "FP32", "[-1, 4]"]
    assert f"{info.metrics['accuracy']:.4g}" in page.locator("#metrics-table").inner_text()
    assert "passes" in page.locator("#gates-table").inner_text()
    assert page.locator("#report").inner_text().startswith("compress fp16: onnx -> onnx")
    assert page.locator("#report-charts svg rect.bar").count() >= 4  # size and latency, before and after
    tab.shot(shots / "dashboard-version.png")
    assert tab.errors == []


def test_live_charts_and_drift_render_after_traffic(tab: Page, server: str, shots: Path) -> None:
    x, _ = dataset(64, seed=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # For the documentation's screenshot, traffic spread over half a minute draws lines, not a spike.
    pause = 1.0 if os.environ.get("AIMASS_SCREENSHOTS") else 0.0
    with httpx.Client(base_url=server, headers=headers) as client:
        client.get("/dashboard/api/live").raise_for_status()  # the first look starts the sampler
        for i, rows in enumerate(np.array_split(x, 32)):
            version = "1" if i % 4 else "2"
            body = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]
            }
            for _ in range(1 + i % 5 if pause else 1):
                client.post(f"/v2/models/fraud/versions/{version}/infer", json=body).raise_for_status()
            time.sleep(pause)
    time.sleep(0.6)  # past the sampler's minimum gap: the page's first look reads a new interval
    page = tab.open("#/live")
    assert "fraud" in page.locator("#live-table").inner_text()
    charts = page.locator("#live-charts svg.aimass-chart")
    assert charts.count() == 5
    for i in range(3):  # requests, latency, queue vs compute: lines (or points) with data
        assert int(charts.nth(i).get_attribute("data-points")) > 0
    tab.shot(shots / "dashboard-live.png")
    page = tab.open("#/drift")
    assert "x[0]" in page.locator("#drift-fraud-1").inner_text()
    assert page.locator("#page svg line.threshold").count() == 2
    tab.shot(shots / "dashboard-drift.png")
    assert tab.errors == []


def test_auth_is_enforced_and_the_token_kept_out_of_urls(browser: Any, server: str) -> None:
    tab = Page(browser, server, token=None)
    try:
        page = tab.page
        page.goto(f"{server}/")
        page.wait_for_selector("#login:not([hidden])")
        assert page.locator("#view").inner_text() == ""
        status = page.evaluate("fetch('/dashboard/api/models').then(r => r.status)")
        assert status == 401
        page.fill("#token", "wrong")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login-error:text('refused')")
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#models-table")
        assert TOKEN not in page.url
        assert page.evaluate("sessionStorage.getItem('aimass.dashboard.token')") == TOKEN
        unexpected = [e for e in tab.errors if "401" not in e]  # the refused requests log their 401
        assert unexpected == []
    finally:
        tab.context.close()


def test_library_ui_without_a_server(browser: Any, library: Path, shots: Path) -> None:
    with live_server(ui_app(Store(library))) as address:
        tab = Page(browser, f"http://{address}", token=None)
        try:
            page = tab.open("#/")
            assert page.locator("nav a[data-nav=live]").is_hidden()  # no live service without a server
            assert "library" in page.locator("#where").inner_text()
            assert page.locator("#models-table tbody tr").count() == 2
            assert tab.errors == []
        finally:
            tab.context.close()
