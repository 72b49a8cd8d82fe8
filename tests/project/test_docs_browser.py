"""``/docs`` in a real headless Chromium (Debian's, installed by ``scripts/setup.sh --test``), with
every request that leaves the server refused: the page must render from the package alone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelport
from modelport.server.spawn import serving
from modelport.settings import Settings

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own traffic (updates, sync, Google lookups) would be refused by the closed network anyway
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser_path() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/setup.sh --test installs it (Debian package chromium)")
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it)")
    return CHROMIUM


def test_docs_render_offline_with_every_operation(
    browser_path: str, tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    from playwright.sync_api import Route, sync_playwright

    frame, labels = iris
    home = tmp_path / "home"
    model = LogisticRegression(max_iter=1000).fit(frame, labels)
    modelport.register(model, name="iris", sample_input=frame.head(30), settings=Settings(home=home))
    env = {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1"}

    with serving(["iris"], env=env) as server, sync_playwright() as playwright:
        origin = urlsplit(server.base).netloc
        refused: list[str] = []
        errors: list[str] = []

        def only_the_server(route: Route) -> None:
            if urlsplit(route.request.url).netloc == origin:
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        browser = playwright.chromium.launch(executable_path=browser_path, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{server.base}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            page.wait_for_selector(".opblock", timeout=30_000)
            title = page.inner_text(".swagger-ui .info .title")
            paths = page.locator(".opblock .opblock-summary-path").all_inner_texts()
            invalid = page.locator(".swagger-ui .errors-wrapper").count()
        finally:
            browser.close()

    assert refused == [], f"/docs asked for something outside the server: {refused}"
    assert errors == [], errors
    assert invalid == 0, "Swagger UI reported errors in /openapi.json"
    assert "modelport" in title
    assert any("/v2/models/iris/infer" in path for path in paths), paths
    assert any("/v1/models/iris:predict" in path for path in paths), paths
