"""What researchers expect beside a stored run: the Runs page reopens the run a URL names, says
in words what each run is, draws a CKA run, subtracts two grids of the same layers; the CKA page
compares with the stored grid one picks. On a fresh store (the bundled grids) plus one small
grid computed here and one CKA matrix stored by hand (the page only reads it)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from streamlit.testing.v1 import AppTest

from core import paths, runs
from core.engine.grid import run_grid
from core.models import catalog
from core.progress import Status
from core.runs import bundled, jobs
from core.runs.cka_runs import cka_config
from core.runs.recipes import grid_config
from core.runs.store import Store
from ui import compare
from ui.grids import run_label

APP = str(paths.PROJECT_ROOT / "app.py")
LESSON = json.loads(bundled.BUNDLE_FILES[0].read_text())
SENDER, RECEIVER = catalog.DEFAULT_SENDER, catalog.DEFAULT_RECEIVER
SMALL_LAYERS = (["stem", "layer4.0"], ["layer1.0", "layer3.0"])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store with the bundled grids, a 2 × 2 Instant grid of two seeds, and a CKA matrix of
    the default pair with the CKA page's default settings (values k / 100, row by row)."""
    db = tmp_path_factory.mktemp("runs_page") / "runs.sqlite3"
    store = Store(db)
    added = dict(zip(LESSON["grids"], bundled.install(store)))
    small = run_grid(grid_config(SENDER, "zoo/resnet_1111-s1", "instant", "quick", sender_layers=SMALL_LAYERS[0],
                                 receiver_layers=SMALL_LAYERS[1]), store=store, device="cpu")
    deeper = LESSON["grids"]["deeper"]
    layers_a, layers_b = deeper["sender_layers"], deeper["receiver_layers"]
    config = cka_config(SENDER, RECEIVER, kernel="linear", limit=2000, dataset="fashion-mnist")
    cka_id = store.create_run("cka", runs.identity("cka", config, None))
    matrix = [[(r * len(layers_b) + c) / 100 for c in range(len(layers_b))] for r in range(len(layers_a))]
    store.put_artifact(cka_id, "result", {"model_a": SENDER, "model_b": RECEIVER, "layers_a": layers_a,
                                          "layers_b": layers_b, "cka": matrix, "kernel": "linear",
                                          "batch_size": 500, "n_examples": 2000, "seconds": 1.0})
    store.update_run(cka_id, status=Status.DONE, summary={"layers_a": layers_a, "layers_b": layers_b})
    return {"db": db, "bundled": added, "small": small.run_id, "cka": cka_id, "cka_matrix": matrix}


@pytest.fixture
def app(stored, monkeypatch):
    monkeypatch.setenv("STITCHLAB_DB", str(stored["db"]))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    _no_trouble(at)
    return at


def _no_trouble(at):
    assert not at.exception, [e.value for e in at.exception]


def _open(at, page: str, **params):
    at.switch_page(page)
    at.query_params.update(params)
    at.run()
    _no_trouble(at)
    return at


def _chart(at, key: str) -> dict:
    (chart,) = [c for c in at.get("plotly_chart") if (c.key or "").startswith(key)]
    return json.loads(chart.proto.spec)


def _cell_colors(figure: dict) -> list[float]:
    """The values a layer grid colours its done cells by, row by row (its first trace)."""
    return figure["data"][0]["marker"]["color"]


def _done_values(grid: dict) -> list[float]:
    return [grid["accuracy"][r][c] for r in range(len(grid["sender_layers"]))
            for c in range(len(grid["receiver_layers"])) if grid["status"][r][c] == "done"]


def test_a_run_named_in_the_url_reopens(app, stored):
    at = _open(app, "pages/runs.py", run=stored["small"])
    assert any(stored["small"] in h.value for h in at.subheader)
    assert at.selectbox(key="run").value == stored["small"]
    assert len(_cell_colors(_chart(at, "runs_heatmap"))) == 4


def test_a_clicked_row_goes_into_the_url(app, stored):
    import hashlib

    at = _open(app, "pages/runs.py")
    ids = list(at.dataframe[0].value["run"])
    listing = hashlib.sha1(",".join(ids).encode()).hexdigest()[:10]
    at.session_state[f"runs_table_{listing}"] = {"selection": {"rows": [ids.index(stored["cka"])], "columns": [],
                                                               "cells": []}}
    at.run()
    _no_trouble(at)
    assert at.query_params.get("run") == stored["cka"]


def test_the_table_says_what_each_run_is(app, stored):
    table = _open(app, "pages/runs.py").dataframe[0].value.set_index("run")
    small = table.loc[stored["small"]]
    assert (small["recipe"], small["images"], small["cells"], small["origin"]) == (
        "Instant (least squares)", "2,000 / 1,000", "4 / 4", "computed here")
    assert small["layers"] == "stem, layer4.0 → layer1.0, layer3.0"
    deeper, grid = table.loc[stored["bundled"]["deeper"]], LESSON["grids"]["deeper"]
    stored_cells = sum(s != "missing" for row in grid["status"] for s in row)
    assert (deeper["recipe"], deeper["images"], deeper["layers"], deeper["origin"]) == (
        "Paper recipe (3 epochs from scratch)", "all", "all", "bundled with StitchLab")
    assert deeper["cells"] == f"{stored_cells} / {len(grid['sender_layers']) * len(grid['receiver_layers'])}"
    assert table.loc[stored["cka"]]["images"] == "2,000"


def test_a_cka_run_is_drawn_as_a_heatmap_with_exports(app, stored):
    at = _open(app, "pages/runs.py", run=stored["cka"])
    assert _cell_colors(_chart(at, "runs_cka_heatmap")) == [v for row in stored["cka_matrix"] for v in row]
    assert [b.proto.label for b in at.get("download_button")] == ["Export CSV", "Export JSON"]
    assert not at.get("json")


def test_the_difference_of_two_grids_of_the_same_layers(app, stored):
    real, control = stored["bundled"]["deeper"], stored["bundled"]["deeper_random_both"]
    at = _open(app, "pages/runs.py", run=real)
    picker = at.selectbox(key="runs_compare")
    same_layers = {stored["bundled"][k] for k in ("deeper_random_sender", "deeper_random_receiver",
                                                  "deeper_random_both", "deeper_lstsq")}
    assert {option.rsplit(" · run ", 1)[1] for option in picker.options} == same_layers
    assert not any(option.startswith("zoo/") for option in picker.options)  # all of this pair: not named
    picker.set_value(control).run()
    _no_trouble(at)
    a, b = LESSON["grids"]["deeper"], LESSON["grids"]["deeper_random_both"]
    expected = [a["accuracy"][r][c] - b["accuracy"][r][c] for r in range(len(a["sender_layers"]))
                for c in range(len(a["receiver_layers"])) if a["status"][r][c] == b["status"][r][c] == "done"]
    figure = _chart(at, "runs_difference")
    assert _cell_colors(figure) == expected
    assert figure["data"][0]["marker"]["colorscale"][0][1] == "rgb(5,48,97)"  # RdBu_r: blue below ...
    assert figure["data"][0]["marker"]["cmin"] == -figure["data"][0]["marker"]["cmax"]  # ... 0 in the middle
    link = next(option for option in picker.options if option.endswith(control))  # what the URL holds
    again = AppTest.from_file(APP, default_timeout=120)
    again.run()
    reopened = _open(again, "pages/runs.py", run=real, runs_compare=link)
    assert _cell_colors(_chart(reopened, "runs_difference")) == expected


def test_the_cka_page_compares_with_the_chosen_grid(app, stored):
    """By default with the bundled task-trained grid (only bundled grids of this pair are stored),
    not the newest bundled one (least squares); any other on demand, and in the link."""
    trained, lstsq = stored["bundled"]["deeper"], stored["bundled"]["deeper_lstsq"]
    at = _open(app, "pages/cka.py")
    picker = at.selectbox(key="cka_grid")
    assert picker.value == trained
    assert picker.options[0] == f"{run_label(Store(stored['db']).get_run(lstsq))} · run {lstsq}"  # newest first
    computed = datetime.fromisoformat(LESSON["made_with"]["date"]).timestamp()  # not when the store installed it
    assert f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(computed))} · bundled" in picker.options[1]
    assert _cell_colors(_chart(at, "cka_page_grid")) == _done_values(LESSON["grids"]["deeper"])
    picker.set_value(lstsq).run()
    _no_trouble(at)
    assert _cell_colors(_chart(at, "cka_page_grid")) == _done_values(LESSON["grids"]["deeper_lstsq"])
    link = next(option for option in picker.options if option.endswith(lstsq))  # what the URL holds
    again = AppTest.from_file(APP, default_timeout=120)
    again.run()
    assert _open(again, "pages/cka.py", cka_grid=link).selectbox(key="cka_grid").value == lstsq


# --- the arithmetic, on its own -----------------------------------------------------------------
def _grid(accuracy, status=None, senders=("a", "b"), receivers=("x", "y")):
    return {"sender_layers": list(senders), "receiver_layers": list(receivers), "accuracy": accuracy,
            "status": status or [["done" if v is not None else "missing" for v in row] for row in accuracy]}


def test_difference_is_a_minus_b_where_both_cells_are_done():
    a = _grid([[0.75, 0.5], [None, 1.0]], [["done", "done"], ["missing", "done"]])
    b = _grid([[0.25, None], [0.5, 0.125]], [["done", "failed"], ["done", "done"]])
    diff = compare.difference(a, b)
    assert diff["accuracy"] == [[0.5, None], [None, 0.875]]
    assert diff["status"] == [["done", "failed"], ["missing", "done"]]
    assert (diff["mean"], diff["cells"]) == (0.6875, 2)


def test_difference_of_grids_of_other_layers_is_refused_in_one_line():
    with pytest.raises(ValueError) as refused:
        compare.difference(_grid([[0.5, 0.5], [0.5, 0.5]]), _grid([[0.5, 0.5], [0.5, 0.5]], receivers=("x", "z")))
    message = str(refused.value)
    assert "\n" not in message and "receiver layers (x, z)" in message and "same layers" in message


def test_only_grids_of_the_same_layers_are_offered():
    def run(run_id, senders, receivers):
        return {"id": run_id, "summary": {"sender_layers": senders, "receiver_layers": receivers}}

    a = run("a", ["s1", "s2"], ["r1"])
    others = [a, run("same", ["s1", "s2"], ["r1"]), run("fewer", ["s1"], ["r1"]), run("queued", None, None)]
    assert [r["id"] for r in compare.comparable(a, others)] == ["same"]
    assert compare.comparable(run("queued", None, None), others) == []


def test_open_sets_the_settings_again_in_the_stitching_pages_own_run(monkeypatch):
    """Runs → "Open in the Stitching page" came up with the default receiver in about one try in
    five (a real browser): the button's on_click runs before the Runs page's run, which used up the
    settings, and the page switch can drop widget state Streamlit had not stored yet. They must be
    set again in the Stitching page's first run, once (then the user's choices stand)."""
    from ui import grids

    state: dict = {}
    monkeypatch.setattr(grids.st, "session_state", state)
    grids.use_settings({"sender": SENDER, "receiver": "zoo/resnet_1111-s1", "recipe": "Instant"})
    grids.apply_pending_settings("runs")  # the run the click starts is still the Runs page's
    state["receiver"] = RECEIVER  # what the switch can leave: the widget's default
    grids.apply_pending_settings("stitching")
    assert state["receiver"] == "zoo/resnet_1111-s1" and state["s_layers"] == []
    state["receiver"] = "zoo/resnet_2222-s1"  # the user's next choice
    grids.apply_pending_settings("stitching")
    assert state["receiver"] == "zoo/resnet_2222-s1"
