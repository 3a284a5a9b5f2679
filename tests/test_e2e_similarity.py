"""The Similarity page in a real browser (Debian's Chromium through Playwright, as tests/test_e2e.py),
in a 1280 x 720 window: pick a second measure, compute both in the app's worker, and see both
heatmaps beside the pair's bundled grid, side by side inside the window, and the ranking table.
A screenshot goes to ``test-output/screenshots/similarity.png`` (to look at, not compared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_app import CHROMIUM, CHROMIUM_ARGS, served_app

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
WINDOW = {"width": 1280, "height": 720}

pytestmark = pytest.mark.e2e


def test_two_measures_computed_drawn_and_ranked(tmp_path):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with served_app(tmp_path, tmp_path / "e2e.sqlite3") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport=WINDOW).new_page()
        page.set_default_timeout(120_000)
        page.goto(url + "/")  # app.py first: a fresh server's first page URL would open the legacy page
        page.get_by_text("Model stitching").first.wait_for()
        page.goto(url + "/cka?cka_images=500")  # the default pair, whose bundled grid the store holds
        page.get_by_text("Similarity: do the layers represent the images alike?").wait_for()
        measures = page.locator("[data-testid='stMultiSelect']").filter(has_text="Measures")
        measures.locator("input").first.click()
        page.get_by_role("option", name="RBF CKA").click()
        page.keyboard.press("Escape")
        page.get_by_text("Not stored for 500 test images yet: Linear CKA, RBF CKA").wait_for()
        page.get_by_role("button", name="Compute", exact=True).click()
        page.get_by_text("Which measure agrees with stitching?").wait_for(timeout=300_000)
        page.wait_for_timeout(1500)  # charts draw, fonts load
        page.screenshot(path=str(SHOTS / "similarity.png"), full_page=True)

        titles = page.locator(".js-plotly-plot .gtitle").evaluate_all("titles => titles.map(t => t.textContent)")
        assert {"Linear CKA", "RBF CKA", "real networks"} <= set(titles), titles
        for title in ("Linear CKA", "RBF CKA"):  # each heatmap fits the window's width
            box = page.locator(".stPlotlyChart").filter(has=page.locator(".gtitle", has_text=title)).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= WINDOW["width"], (title, box)
        assert page.locator("[data-testid='stDataFrame']").first.is_visible()  # the ranking
        page.get_by_text("pairs of cells").first.wait_for()
        assert "sim_measures=" in page.url  # the choice is in the link
        assert not page.locator("[data-testid='stException']").count()
        browser.close()
