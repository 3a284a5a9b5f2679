"""The app in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser).

Starts ``streamlit run app.py`` on a free local port with its own store, picks two zoo
networks, runs an Instant grid, waits for the heatmap, clicks a cell, checks its details, and
saves screenshots of the main pages under ``test-output/screenshots`` (the README's pictures).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e_app import CHROMIUM, CHROMIUM_ARGS, served_app

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
# Streamlit scrolls inside its own container, so a tall window is what fits a page in a screenshot.
VIEWPORT = {"width": 1500, "height": 2100}
# Every picture the tests below save (the README shows some of them, copied to docs/screenshots).
EXPECTED_SHOTS = ["stitching.png", "cell-details.png", "stitching-controls.png", "cka.png", "lesson.png",
                  "lesson-later-into-earlier.png", "models.png", "runs.png", "attributions.png"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    with served_app(home, home / "e2e.sqlite3") as url:
        yield url, home


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SHOTS.glob("*.png"):  # what test_screenshots_are_pictures checks is this run's pictures
        stale.unlink()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(120_000)
        yield page
        browser.close()


def _ready(page, text: str) -> None:
    page.wait_for_selector("[data-testid='stAppViewContainer']")
    page.get_by_text(text, exact=False).first.wait_for()


def _pick(page, label: str, option: str) -> None:
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label)
    box.locator("input").first.click()
    box.locator("input").first.fill(option)
    page.get_by_role("option").filter(has_text=option).first.click()


def test_instant_grid_heatmap_and_cell_details(server, page):
    url, _ = server
    page.goto(url + "/")
    _ready(page, "Model stitching")
    _pick(page, "Sender", "zoo/resnet_1111-s0")
    _pick(page, "Receiver", "zoo/resnet_1111-s1")
    # the first screen shows the bundled paper-recipe grid of the pair: ask for Instant on Quick images
    page.get_by_text("Instant (least squares)", exact=True).click()
    page.get_by_text("Quick: 2,000 training / 1,000 test images", exact=True).click()
    page.get_by_text("No grid stored for these settings yet").wait_for()
    page.get_by_role("button", name="Run").click()
    # The worker runs the grid; the page follows it and draws the heatmap when it is stored.
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for(timeout=300_000)
    page.get_by_text("receiver alone").first.wait_for()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "stitching.png"), full_page=True)

    points = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").first.locator(".point")
    assert points.count() == 25  # 5 sender layers x 5 receiver layers, all stitchable
    points.nth(17).click(force=True)
    page.get_by_text("stitched accuracy", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("accuracy per class").first.wait_for()
    page.get_by_text("See what this stitched network looks at").wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "cell-details.png"), full_page=True)
    assert "cell_i=" in page.url and "cell_j=" in page.url  # the selected cell lives in the URL


def test_controls_side_by_side(server, page):
    url, _ = server
    page.goto(url + "/?sender=zoo/resnet_1111-s0&receiver=zoo/resnet_1111-s1&controls=random-both")
    _ready(page, "Model stitching")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("control: random both").first.wait_for(timeout=300_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "stitching-controls.png"), full_page=True)
    assert page.locator(".js-plotly-plot").count() >= 2


def _grid_stored(page, url: str, pair: str) -> None:
    """Run the pair's default grid unless an earlier test stored it already (so a test runs alone)."""
    page.goto(url + "/?" + pair + "&recipe=Instant+%28least+squares%29")
    _ready(page, "Model stitching")
    page.locator(".js-plotly-plot .scatterlayer .point, :text('No grid stored for these settings yet')") \
        .first.wait_for()
    if page.get_by_text("No grid stored for these settings yet").count():
        page.get_by_role("button", name="Run").click()
        page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for(timeout=300_000)


def test_cka_beside_the_grid(server, page):
    url, _ = server
    pair = "sender=zoo/resnet_1111-s0&receiver=zoo/resnet_1111-s1"
    _grid_stored(page, url, pair)
    page.goto(url + f"/cka?{pair}&cka_images=1000")
    _ready(page, "Similarity: do the layers represent the images alike?")
    page.get_by_role("button", name="Compute").click()
    page.get_by_text("Which measure agrees with stitching?").first.wait_for(timeout=300_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "cka.png"), full_page=True)
    assert page.locator(".js-plotly-plot").count() >= 3  # CKA, the stitching grid beside it, the scatter


def test_other_pages_render_in_the_browser(server, page):
    url, _ = server
    for path, text, shot in [("/lesson", "Do two networks see the world the same way?", "lesson.png"),
                             ("/lesson?step=3+%C2%B7+Later+into+earlier", "A later layer feeds an earlier one",
                              "lesson-later-into-earlier.png"),
                             ("/models", "Add your own checkpoint", "models.png"),
                             ("/runs", "Runs", "runs.png")]:
        page.goto(url + path)
        _ready(page, text)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / shot), full_page=True)
    assert not page.locator("[data-testid='stException']").count()


def test_attributions_page_in_the_browser(server, page):
    url, _ = server
    page.goto(url + "/attributions?sender=zoo/resnet_1111-s0&receiver=zoo/resnet_1111-s1")
    _ready(page, "Attributions")
    page.get_by_text("Download the figure (PNG)").wait_for(timeout=180_000)  # the figure: thumbnails are images too
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "attributions.png"), full_page=True)
    assert not page.locator("[data-testid='stException']").count()


def _assert_screenshot(path: Path) -> None:
    """``path`` is a full-page PNG screenshot of a rendered page: the window's width, at least its
    height, and not one flat colour (a blank or unrendered page)."""
    from PIL import Image

    assert path.is_file(), f"{path} is missing"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 20_000, f"{path}: {len(data)} bytes, too small for a page"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width == VIEWPORT["width"] and VIEWPORT["height"] <= height <= 20 * VIEWPORT["height"], \
            f"{path}: {width} x {height}"
        image.load()  # decodes every pixel: a truncated or corrupt file fails here
        colours = image.convert("RGB").getcolors(width * height)
    most = max(colours)[0] / (width * height)
    assert len(colours) >= 256 and most < 0.95, f"{path}: {len(colours)} colours, {most:.0%} of it one colour"


def test_screenshots_are_pictures():
    readme = re.findall(r"docs/screenshots/([\w.-]+\.png)", (ROOT / "README.md").read_text())
    assert readme, "README.md shows no screenshots"
    assert set(readme) <= set(EXPECTED_SHOTS), f"the tests save none of {sorted(set(readme) - set(EXPECTED_SHOTS))}"
    for name in EXPECTED_SHOTS:
        _assert_screenshot(SHOTS / name)
    docs = ROOT / "docs" / "screenshots"
    if os.environ.get("STITCHLAB_UPDATE_DOCS"):  # refresh the README's pictures
        docs.mkdir(parents=True, exist_ok=True)
        for name in EXPECTED_SHOTS:
            shutil.copy(SHOTS / name, docs / name)
    for name in readme:
        _assert_screenshot(docs / name)
