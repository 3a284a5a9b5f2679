"""Presenter mode in a real browser (Debian's Chromium through Playwright, as tests/test_e2e.py):
a 1280 x 720 window, ``present=1`` in the URL. On every page the sidebar and the header are gone,
the page's main chart lies wholly inside the window (nothing to scroll to), and the toggle at the
top leaves presenter mode and comes back.

The store is filled before the server starts (a grid, a CKA matrix and a small sweep), so every
page has its chart to show; the Attributions page computes its maps in the app's own worker.
Screenshots go to ``test-output/presenter`` (to look at, not compared).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote_plus

import pytest

from tests.e2e_app import CHROMIUM, CHROMIUM_ARGS, need_chromium, served_app
from ui.grids import RECIPES

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "presenter"
WINDOW = {"width": 1280, "height": 720}  # a classroom projector
PAIR = "sender=zoo/resnet_1111-s0&receiver=zoo/resnet_2222-s0"
CKA_IMAGES = 500
PLOT = ".stPlotlyChart"
# A grid of 2 x 2 least-squares stitches per pair and control: seconds on a CPU.
TINY_SWEEP = {"models": ["zoo/resnet_1111-s*"], "pairs": "distinct", "controls": ["none", "random-both"],
              "mode": "lstsq", "train_limit": 200, "eval_limit": 150,
              "grid": {"sender_layers": ["stem", "layer4.0"], "receiver_layers": ["stem", "layer4.0"]}}
INSTANT = "recipe=" + quote_plus(next(iter(RECIPES)))  # the grid _fill_store stores, not the bundled one


def _step(label: str) -> str:
    return "/lesson?step=" + quote_plus(label)


# (name, path, the page's main chart)
PAGES = [
    ("stitching", f"/?{PAIR}&{INSTANT}", PLOT),
    ("stitching-first-screen", f"/?{PAIR}", PLOT),  # the pair's bundled grid, beside its controls
    ("cka", f"/cka?{PAIR}&cka_images={CKA_IMAGES}", PLOT),
    ("attributions", f"/attributions?{PAIR}", "[data-testid='stImage'], [data-testid='stPyplot']"),
    ("models", "/models", "[data-testid='stDataFrame']"),  # the zoo's table: the page has no chart
    ("runs", "/runs", "[data-testid='stDataFrame']"),  # the runs' table, likewise
    ("sweeps", "/sweeps", PLOT),
    ("lesson-1", "/lesson", "[data-testid='stGraphVizChart']"),
    ("lesson-2", _step("2 · Same architecture, two seeds"), PLOT),
    ("lesson-3", _step("3 · Later into earlier"), PLOT),
    ("lesson-4", _step("4 · Random controls"), PLOT),
    ("lesson-5", _step("5 · What CKA says"), PLOT),
    ("lesson-6", _step("6 · Imitating is not the same as working"), PLOT),
]
CASES = [pytest.param(*case, id=case[0]) for case in PAGES]

pytestmark = pytest.mark.e2e


def _fill_store(db: Path) -> None:
    """What the pages show: the Stitching page's default grid for PAIR, its linear CKA, and a small sweep."""
    from core.engine.grid import run_grid
    from core.runs.similarity_runs import run_similarity, similarity_configs
    from core.runs.store import Store
    from core.runs.sweep import run_sweep
    from ui.grids import BUDGETS, grid_config
    from ui.state import Selection

    store = Store(db)
    selection = Selection("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", "fashion-mnist", "cpu")
    run_grid(grid_config(selection, [], [], next(iter(RECIPES)), next(iter(BUDGETS))), store=store, device="cpu")
    run_similarity(similarity_configs(selection.sender, selection.receiver, ["linear-cka"], limit=CKA_IMAGES), store,
                   device="cpu")
    run_sweep(TINY_SWEEP, store, device="cpu", name="tiny")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_chromium()
    home = tmp_path_factory.mktemp("presenter-home")
    db = home / "e2e.sqlite3"
    _fill_store(db)
    with served_app(home, db) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport=WINDOW).new_page()
        page.set_default_timeout(120_000)
        # Open / first, and let app.py run once: until it has declared its pages, a page's URL opens
        # Streamlit's legacy page for that file, without app.py (no sidebar, no presenter mode).
        page.goto(server + "/")
        page.get_by_text("Model stitching").first.wait_for()
        yield page
        browser.close()


def _inside_window(box: dict | None, what: str) -> None:
    assert box is not None, f"{what} is not shown"
    left, top, right, bottom = box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]
    assert box["width"] > 0 and box["height"] > 0, f"{what} is empty: {box}"
    assert left >= 0 and top >= 0 and right <= WINDOW["width"] and bottom <= WINDOW["height"], \
        f"{what} spans x {left:.0f}-{right:.0f}, y {top:.0f}-{bottom:.0f}: not inside the {WINDOW} window"


def _presenting(page) -> None:
    """Presenter mode is on: no sidebar, no header, the way out on screen."""
    page.locator("[data-testid='stSidebar']").wait_for(state="hidden")
    assert page.locator("[data-testid='stHeader']").is_hidden()
    toggle = page.locator(".st-key-present")
    assert toggle.is_visible()
    _inside_window(toggle.bounding_box(), "the presenter toggle")


@pytest.mark.parametrize("name,path,main", CASES)
def test_main_chart_fits_the_window(server, page, name, path, main):
    page.goto(server + path + ("&" if "?" in path else "?") + "present=1")
    chart = page.locator(main).first
    chart.wait_for(state="visible", timeout=300_000)  # Attributions: computed in the worker first
    page.wait_for_timeout(1500)  # charts draw, fonts load: the layout settles
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    _presenting(page)
    assert not page.locator("[data-testid='stException']").count()
    _inside_window(chart.bounding_box(), f"{name}: the main chart ({main})")


def test_the_toggle_leaves_and_comes_back(server, page):
    page.goto(server + "/lesson?present=1")
    page.locator("[data-testid='stGraphVizChart']").wait_for()
    _presenting(page)
    assert page.locator(".st-key-step").is_visible()  # the one control the Lesson keeps: its steps
    page.locator(".st-key-present label").click()  # off: the sidebar and the page's controls come back
    page.locator("[data-testid='stSidebar']").wait_for(state="visible")
    page.get_by_text("Sender (runs up to layer i)").wait_for()
    assert "present=" not in page.url
    page.locator(".st-key-present label").click()  # on again, from where it is in the normal page
    page.wait_for_url("**present=true**")
    _presenting(page)
    page.reload()  # the URL alone brings presenter mode back
    page.locator("[data-testid='stGraphVizChart']").wait_for()
    _presenting(page)
