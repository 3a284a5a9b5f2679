"""Every page, headless (Streamlit's AppTest), on the bundled zoo and a real stored grid."""

import pytest
from streamlit.testing.v1 import AppTest

from core.engine.grid import run_grid
from core.engine.results import CONTROLS, GridConfig
from core.runs import jobs
from core.runs.store import Store
from ui.grids import BUDGETS, RECIPES, grid_config, settings_of
from ui.state import Selection

APP = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/stitching.py", "pages/cka.py", "pages/attributions.py", "pages/models.py", "pages/runs.py",
         "pages/sweeps.py", "pages/lesson.py"]
INSTANT, QUICK = "Instant (least squares)", "Quick: 2,000 training / 1,000 test images"
BUNDLED_RECIPE, FULL = "Paper recipe (3 epochs from scratch)", "Full: every training and test image"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding the Instant grid the Stitching page shows by default."""
    db = tmp_path_factory.mktemp("app") / "app.sqlite3"
    store = Store(db)
    selection = Selection("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", "fashion-mnist", "cpu")
    config = grid_config(selection, [], [], INSTANT, QUICK)
    result = run_grid(config, store=store, device="cpu")
    return db, result


@pytest.fixture
def app(stored, monkeypatch):
    db, _ = stored
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)  # jobs stay queued; tests run them
    at = AppTest.from_file(APP, default_timeout=120)
    # the stored Instant grid; without a URL the first screen opens on the bundled paper-recipe grid
    at.query_params.update(recipe=INSTANT, budget=QUICK)
    at.run()
    assert not at.exception, at.exception
    return at


def _no_trouble(at):
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app, page):
    app.switch_page(page)
    app.run()
    _no_trouble(app)
    assert app.title, f"{page} shows no title"


def test_stitching_page_shows_the_stored_grid_and_a_cell(app, stored):
    _, result = stored
    assert "Model stitching" in app.title[0].value
    assert not app.info, [i.value for i in app.info]  # the stored grid was found
    assert len(app.get("plotly_chart")) >= 1
    assert app.metric[1].value == f"{result.reference_accuracy:.3f}"
    app.selectbox(key="cell_i").set_value("layer4.0")
    app.selectbox(key="cell_j").set_value("layer1.1").run()
    _no_trouble(app)
    values = [m.value for m in app.metric]
    assert f"{result.value('layer4.0', 'layer1.1'):.3f}" in values
    assert any(link.label.startswith("See what this stitched network") for link in app.get("page_link"))


def _work_off_the_queue(db):
    """What the app's worker process does, here in the test's process, until the queue is empty."""
    from core import runs

    runs.serve(db, poll=0.01, idle_exit=0.05)


def test_attributions_page_offers_the_stored_cells(app, stored):
    db, result = stored
    app.switch_page("pages/attributions.py")
    app.run()
    _no_trouble(app)
    assert any("Scoring the receiver" in i.value for i in app.info)  # asked of the worker, not computed here
    _work_off_the_queue(db)
    app.run()
    _no_trouble(app)
    assert app.selectbox(key="attr_run").value == result.run_id
    assert app.selectbox(key="cell_i").options == result.sender_layers
    app.selectbox(key="cell_i").set_value("layer3.0").run()
    assert app.selectbox(key="cell_j").options == result.receiver_layers
    app.selectbox(key="cell_j").set_value("layer1.0").run()
    _no_trouble(app)
    assert (app.selectbox(key="cell_i").value, app.selectbox(key="cell_j").value) == ("layer3.0", "layer1.0")
    thumbnails = len(app.get("image"))  # the test images' gallery; the figure is not drawn yet
    assert any("Computing the attributions" in i.value for i in app.info)
    _work_off_the_queue(db)
    app.run()
    _no_trouble(app)
    assert len(app.get("image")) == thumbnails + 1, "no attribution figure"  # st.pyplot draws an image


def test_a_followed_job_whose_worker_died_gets_a_worker_again(app, stored, monkeypatch):
    """The job is 'running' under a worker that is gone (no one holds the lock): the page's
    progress panel starts a worker (which recovers the job) without any new submission."""
    db, _ = stored
    started = []
    monkeypatch.setattr(jobs, "ensure_worker", lambda db: started.append(db) or 0)
    app.multiselect(key="s_layers").set_value(["layer2.0"])
    app.multiselect(key="r_layers").set_value(["layer2.0"]).run()
    app.button[0].click().run()  # Run: queued (and a worker asked for)
    (job,) = jobs.list_jobs(Store(db), active_only=True)
    with Store(db).transaction() as conn:  # a worker claimed it, then died
        conn.execute("UPDATE jobs SET status = 'running', worker_pid = 4194000 WHERE id = ?", (job["id"],))
    started.clear()
    app.run()
    _no_trouble(app)
    assert started, "the page followed a dead worker's job without starting a worker"
    jobs.cancel(Store(db), job["id"])
    with Store(db).transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ?", (job["id"],))


def test_run_button_queues_a_job_and_the_page_follows_it(app, stored):
    db, _ = stored
    app.radio(key="recipe").set_value("Standard (least squares + 1 epoch)")
    app.multiselect(key="s_layers").set_value(["layer4.0"])
    app.multiselect(key="r_layers").set_value(["layer1.0"]).run()
    assert any("No grid stored" in i.value for i in app.info)
    app.button[0].click().run()
    _no_trouble(app)
    queued = jobs.list_jobs(Store(db), active_only=True)
    assert len(queued) == 1 and len(queued[0]["params"]["configs"]) == 1
    config = queued[0]["params"]["configs"][0]
    assert config["mode"] == "lstsq+train" and config["sender_layers"] == ["layer4.0"]
    jobs.cancel(Store(db), queued[0]["id"])


def test_compute_cka_twice_queues_one_job(app, stored):
    db, _ = stored
    app.switch_page("pages/cka.py")
    app.run()
    for _ in range(2):
        next(b for b in app.button if b.label == "Compute").click().run()
        _no_trouble(app)
    queued = [j for j in jobs.list_jobs(Store(db), active_only=True) if j["kind"] == "similarity"]
    assert len(queued) == 1
    jobs.cancel(Store(db), queued[0]["id"])


def test_broken_upload_gives_one_clear_error(app, tmp_path):
    app.switch_page("pages/models.py")
    app.run()
    app.file_uploader[0].set_value(("broken.pt", b"definitely not a checkpoint", "application/octet-stream"))
    app.run()
    app.button[0].click().run()
    _no_trouble(app)
    assert len(app.error) == 1 and "Could not add broken.pt" in app.error[0].value


def test_runs_page_lists_the_stored_grid(app, stored):
    _, result = stored
    app.switch_page("pages/runs.py")
    app.run()
    _no_trouble(app)
    frame = app.dataframe[0].value
    assert result.run_id in set(frame["run"])


def test_runs_page_shows_a_cell_of_the_selected_grid(app, stored):
    import hashlib

    _, result = stored
    app.switch_page("pages/runs.py")
    app.run()
    ids = list(app.dataframe[0].value["run"])
    listing = hashlib.sha1(",".join(ids).encode()).hexdigest()[:10]
    app.session_state[f"runs_table_{listing}"] = {"selection": {"rows": [ids.index(result.run_id)], "columns": [],
                                                                "cells": []}}
    app.run()
    app.selectbox(key="cell_i").set_value("layer2.0")
    app.selectbox(key="cell_j").set_value("layer3.1").run()
    _no_trouble(app)
    assert f"{result.value('layer2.0', 'layer3.1'):.3f}" in [m.value for m in app.metric]


def test_runs_page_selection_does_not_outlive_a_filter(app, stored):
    import hashlib

    db, result = stored
    extra = Store(db).create_run("cka", {"model_a": "zoo/resnet_1111-s0", "model_b": "zoo/resnet_1111-s1"})
    try:
        app.switch_page("pages/runs.py")
        app.run()
        ids = list(app.dataframe[0].value["run"])
        listing = hashlib.sha1(",".join(ids).encode()).hexdigest()[:10]
        last = ids.index(extra)
        app.session_state[f"runs_table_{listing}"] = {"selection": {"rows": [last], "columns": [], "cells": []}}
        app.run()
        _no_trouble(app)
        assert any(ids[last] in h.value for h in app.subheader)  # the selected run opened
        app.text_input(key="runs_text").set_value(result.run_id).run()  # the grid (and analyses of it) left
        _no_trouble(app)
        rows = list(app.dataframe[0].value["run"])
        assert result.run_id in rows and extra not in rows
        assert not any(extra in h.value for h in app.subheader)
    finally:
        Store(db).delete_run(extra)


def test_url_reproduces_a_view(stored, monkeypatch):
    db, _ = stored
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_2222-s0", "metric": "penalty",
                            "cell_i": "layer3.0", "cell_j": "layer2.0"})
    at.run()
    _no_trouble(at)
    assert at.radio(key="metric").value == "penalty"
    assert at.selectbox(key="cell_i").value == "layer3.0" and at.selectbox(key="cell_j").value == "layer2.0"


@pytest.mark.parametrize("name", ["zoo/nope", "file:/etc/passwd", "torchvision/nope", "paper/nope", "nope"])
def test_a_url_naming_an_unknown_model_gets_one_warning(stored, monkeypatch, name):
    db, _ = stored
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"receiver": name})
    at.run()
    _no_trouble(at)
    assert [w.value for w in at.sidebar.warning if name in w.value] and len(at.sidebar.warning) == 1
    receiver = at.selectbox(key="receiver")
    assert receiver.value != name and name not in receiver.options  # never a path on the server


def test_sweeps_page_shows_a_finished_sweep(tmp_path, monkeypatch):
    from core.runs.sweep import run_sweep

    db = tmp_path / "sweep.sqlite3"
    layers = ["stem", "layer4.0"]
    config = {"models": ["zoo/resnet_1111-s*"], "pairs": "distinct", "controls": ["none", "random-both"],
              "mode": "lstsq", "train_limit": 200, "eval_limit": 150,
              "grid": {"sender_layers": layers, "receiver_layers": layers}}
    sweep = run_sweep(config, Store(db), device="cpu", name="tiny")
    assert sweep["status"] == "done"
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.run()
    _no_trouble(at)
    effect = at.dataframe[1].value  # after the grids table: one row per control
    assert sorted(effect["control"]) == ["none", "random-both"]
    assert len(at.get("plotly_chart")) == 2  # a depth heatmap per control


def _fields(entry) -> dict:
    """A RECIPES / BUDGETS entry's GridConfig fields (a dict, or an object holding them as ``settings``)."""
    return dict(getattr(entry, "settings", entry))


def _is_the_page_setting(config, selection, recipe, budget, control="none"):
    """``config`` is a valid grid of ``selection`` with the recipe's and budget's fields."""
    GridConfig.from_dict(config).validate()  # raises on a mode, epochs, lr, limit... a grid cannot run
    assert (config["sender"], config["receiver"], config["dataset"]) == (selection.sender, selection.receiver,
                                                                         selection.dataset)
    assert config["control"] == control and config["pairs"] is None
    for label, fields in ((recipe, _fields(RECIPES[recipe])), (budget, _fields(BUDGETS[budget]))):
        assert fields and {k: config[k] for k in fields} == fields, label


def test_recipes_and_budgets_are_valid_grid_settings():
    import re

    selection = Selection("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "fashion-mnist", "cpu")
    assert RECIPES and BUDGETS
    seen = []
    for recipe in RECIPES:
        for budget in BUDGETS:
            config = grid_config(selection, ["layer2.0"], [], recipe, budget)
            _is_the_page_setting(config, selection, recipe, budget)
            assert config["sender_layers"] == ["layer2.0"] and config["receiver_layers"] is None
            # The labels say what runs: least squares, epochs of training, how many images.
            assert ("least squares" in recipe) == config["mode"].startswith("lstsq"), recipe
            assert ("epoch" in recipe) == ("train" in config["mode"]), recipe
            if "epoch" in recipe:
                assert f"{config['epochs']:g} epoch" in recipe, recipe
            limits = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", budget)]
            assert [config["train_limit"], config["eval_limit"]] == (limits or [None, None]), budget
            # A stored grid leads back to the settings that made it (the Runs page's link to it).
            settings = settings_of(config)
            assert settings is not None and (settings["recipe"], settings["budget"]) == (recipe, budget)
            for control in CONTROLS:
                _is_the_page_setting(grid_config(selection, [], [], recipe, budget, control=control),
                                     selection, recipe, budget, control)
            seen.append(GridConfig.from_dict(config).identity("cpu"))
    assert all(a != b for i, a in enumerate(seen) for b in seen[:i])  # no two settings share a stored grid


def test_the_stitching_page_runs_every_recipe_and_budget(app, stored):
    """Each recipe and budget the page offers, selected: no exception, and Run queues that grid
    (the stored Instant / Quick grid is shown instead)."""
    db, _ = stored
    selection = app.session_state["selection"]
    assert app.radio(key="recipe").options == list(RECIPES) and app.radio(key="budget").options == list(BUDGETS)
    for recipe in RECIPES:
        for budget in BUDGETS:
            app.radio(key="recipe").set_value(recipe)
            app.radio(key="budget").set_value(budget).run()
            _no_trouble(app)
            assert (app.radio(key="recipe").value, app.radio(key="budget").value) == (recipe, budget)
            if (recipe, budget) == (INSTANT, QUICK):
                assert not app.info and app.get("plotly_chart"), [i.value for i in app.info]
                continue
            if (recipe, budget) == (BUNDLED_RECIPE, FULL):  # the bundled GPU grid of this pair is shown
                assert app.get("plotly_chart") and "bundled with StitchLab" in app.info[0].value
                continue
            assert any("No grid stored" in i.value for i in app.info), (recipe, budget)
            next(b for b in app.button if b.label == "Run").click().run()
            _no_trouble(app)
            queued = jobs.list_jobs(Store(db), active_only=True)
            try:
                assert len(queued) == 1 and len(queued[0]["params"]["configs"]) == 1, (recipe, budget)
                config = queued[0]["params"]["configs"][0]
                _is_the_page_setting(config, selection, recipe, budget)
                assert config == grid_config(selection, [], [], recipe, budget)
            finally:
                for job in queued:
                    jobs.cancel(Store(db), job["id"])


def test_networks_trained_on_another_dataset_are_said_so_before_any_work(stored, monkeypatch):
    """CIFAR-10 beside Fashion-MNIST networks: the Stitching page queued a grid of chance-level
    stitches and the Similarity page said nothing (the Attributions page already refused)."""
    db, _ = stored
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(dataset="cifar10", recipe=INSTANT, budget=QUICK)
    at.run()
    _no_trouble(at)
    (error,) = [e.value for e in at.error]
    assert error.startswith("zoo/resnet_1111-s0 and zoo/resnet_2222-s0 were trained on Fashion-MNIST, not CIFAR-10")
    assert not at.get("plotly_chart")
    next(b for b in at.button if b.label == "Run").click().run()
    assert not jobs.list_jobs(Store(db), active_only=True)  # nothing queued
    at.switch_page("pages/cka.py")
    at.run()
    _no_trouble(at)
    assert any("never trained on" in w.value for w in at.warning)
