"""Clicks in a row in a real browser (Debian's Chromium): every heatmap click selects its cell
and moves the outline at once, a cell named in the URL is outlined, and the Runs page opens a
stored grid in the Stitching page.

The grid is stored by the CLI before the app starts, so these tests run alone in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e_app import CHROMIUM, CHROMIUM_ARGS, need_chromium, served_app
from tests.test_e2e import _ready

ROOT = Path(__file__).resolve().parent.parent
PAIR = "sender=zoo/resnet_1111-s0&receiver=zoo/resnet_1111-s1"

pytestmark = pytest.mark.e2e


class AppUrl(str):
    """The app's URL, with the home folder it was served with."""

    def __new__(cls, url: str, home: Path):
        self = super().__new__(cls, url)
        self.home = home
        return self


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    need_chromium()
    home = tmp_path_factory.mktemp("clicks-home")
    db = home / "clicks.sqlite3"
    env = {**os.environ, "STITCHLAB_HOME": str(home), "STITCHLAB_DB": str(db), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "core", "grid", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1",
                    "--recipe", "instant", "--budget", "quick", "--db", str(db), "--json", str(home / "grid.json"),
                    "--quiet"], cwd=ROOT, env=env, check=True)
    with served_app(home, db) as url:
        yield AppUrl(url, home)


@pytest.fixture()
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _cell_in_url(page) -> tuple[str, str] | None:
    query = parse_qs(urlparse(page.url).query)
    return (query["cell_i"][0], query["cell_j"][0]) if "cell_i" in query and "cell_j" in query else None


def _outlined(page) -> tuple[str, str] | None:
    """The (sender layer, receiver layer) the first heatmap outlines, read from plotly's data."""
    outline = page.evaluate("""() => {
        const trace = document.querySelector('.js-plotly-plot').data.find(t => t.name === 'selected');
        return trace ? [trace.y[0], trace.x[0]] : null; }""")
    return tuple(outline) if outline else None


def _settled(page) -> None:
    """Wait until the page has settled: a click while the script reruns (the first runs after a
    page load write the widgets' URL parameters) is lost with the chart it was made on."""
    page.wait_for_timeout(1500)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=60_000)


def _wait_for(page, condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        page.wait_for_timeout(250)  # not time.sleep: Playwright updates page.url only while it runs
    raise AssertionError(f"timed out waiting for {what}")


def test_a_shared_link_to_a_page_works_as_the_servers_first_request(app_url, page):
    """First in this module: the server has served nothing yet (Streamlit's legacy mode for a
    pages/ folder would run the page without app.py: a traceback, no sidebar)."""
    page.goto(app_url + "/cka?" + PAIR)
    _ready(page, "CKA")
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.wait_for()
    page.wait_for_timeout(1500)
    assert not page.locator("[data-testid='stException']").count(), \
        page.locator("[data-testid='stException']").all_inner_texts()


def test_every_click_in_a_row_selects_its_cell_and_moves_the_outline(app_url, page):
    page.goto(app_url + "/?" + PAIR)
    _ready(page, "Model stitching")
    cells = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").first.locator(".point")
    cells.first.wait_for()
    layers = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].customdata")
    for n in (3, 17, 8, 21, 3):  # each click a different cell than the one before
        wanted = tuple(layers[n])
        cells = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").first.locator(".point")
        _settled(page)
        cells.nth(n).click(force=True)
        _wait_for(page, lambda cell=wanted: _cell_in_url(page) == cell,
                  f"click on {wanted} to reach the URL (it is {_cell_in_url(page)})")
        _wait_for(page, lambda cell=wanted: _outlined(page) == cell,
                  f"the outline to move to {wanted} (it is on {_outlined(page)})")
        page.get_by_text("stitched accuracy", exact=True).first.wait_for()  # the cell's details
        assert not page.locator("[data-testid='stException']").count()


def test_a_cell_named_in_the_url_is_outlined(app_url, page):
    page.goto(app_url + "/?" + PAIR + "&cell_i=layer2.0&cell_j=layer1.0")
    _ready(page, "Model stitching")
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for()
    _wait_for(page, lambda: _outlined(page) == ("layer2.0", "layer1.0"), f"the URL's cell to be outlined "
              f"(outline: {_outlined(page)})")


def test_runs_opens_a_stored_grid_in_the_stitching_page(app_url, page):
    page.goto(app_url + "/")  # a session that shows another pair: the link must switch it
    _ready(page, "Model stitching")
    run_id = json.loads((Path(app_url.home) / "grid.json").read_text())["run_id"]  # the CLI's grid
    page.goto(app_url + f"/runs?runs_text={run_id}")  # the one row (bundled grids are stored too)
    page.get_by_text("Select a row").wait_for()
    table = page.locator("[data-testid='stDataFrame']").first.bounding_box()
    page.mouse.click(table["x"] + 10, table["y"] + 55)  # the first row's selection box
    page.get_by_role("button", name="Open in the Stitching page").click()
    _ready(page, "Model stitching")
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for()
    assert not page.locator("[data-testid='stException']").count()
    query = parse_qs(urlparse(page.url).query)
    assert query.get("receiver") == ["zoo/resnet_1111-s1"], page.url
    assert not page.get_by_text("No grid stored for these settings yet").count()
