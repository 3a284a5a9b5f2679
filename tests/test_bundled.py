"""The bundled, GPU-computed grids: stored as runs on first start, found by identity, labelled
with where they came from, never overwritten by a run of one's own; the Stitching page's first
screen opens on the default pair's task-trained grid with its controls and the seed diagonal."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from streamlit.testing.v1 import AppTest

from core import paths, runs
from core.models import catalog, zoo
from core.progress import Status
from core.runs import bundled, jobs, recipes, seed_check
from core.runs.recipes import grid_config
from core.runs.store import Store

APP = str(paths.PROJECT_ROOT / "app.py")
LESSON = json.loads(bundled.BUNDLE_FILES[0].read_text())
PAPER_FULL = grid_config(catalog.DEFAULT_SENDER, catalog.DEFAULT_RECEIVER, "paper", "full")


def test_install_stores_every_bundled_grid_once_with_the_same_numbers(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    added = bundled.install(store)
    assert len(added) == len(LESSON["grids"])
    assert bundled.install(store) == []  # found by identity: nothing stored twice
    for key, run_id in zip(LESSON["grids"], added):
        grid = runs.load(store, run_id).to_json()
        assert grid["accuracy"] == LESSON["grids"][key]["accuracy"]
        assert grid["status"] == LESSON["grids"][key]["status"]
        assert grid["reference_accuracy"] == LESSON["grids"][key]["reference_accuracy"]
        made = bundled.provenance(store.get_run(run_id))
        assert made["command"] == LESSON["made_with"]["command"] and made["device"] == LESSON["made_with"]["device"]


def test_the_paper_recipe_on_the_default_pair_is_found_and_a_cpu_run_is_a_run_of_its_own(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    bundled.install(store)
    found = runs.find(store, "grid", PAPER_FULL)  # device "auto": any
    assert found is not None and bundled.provenance(found)
    assert runs.find(store, "grid", PAPER_FULL, "cpu") is None  # Run on the CPU queues a grid of its own
    assert runs.submit(store, "grid", [PAPER_FULL], "cpu").job_id is not None
    # a CPU run stored beside it: both kept, the bundled one untouched
    local = store.create_run("grid", runs.identity("grid", PAPER_FULL, "cpu"))
    store.update_run(local, status=Status.DONE, summary={})
    assert runs.find(store, "grid", PAPER_FULL, "cpu")["id"] == local
    assert bundled.provenance(store.get_run(found["id"]))["key"] == "deeper"


def test_a_zoo_with_other_weights_gets_no_bundled_grids(tmp_path, monkeypatch):
    other = tmp_path / "zoo"
    other.mkdir()
    manifest = json.loads((paths.BUNDLED_ZOO / "manifest.json").read_text())
    for entry in manifest["models"]:
        entry["sha256"] = "0" * 64  # retrained weights
    (other / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("STITCHLAB_ZOO", str(other))
    assert bundled.install(Store(tmp_path / "s.sqlite3")) == []


def test_the_bundle_was_computed_from_the_zoo_that_ships_beside_it():
    """The bundle records no weights: it is of the bundled zoo only if every model it uses was
    trained before it was built (retrain the zoo: rebuild the lesson, python -m core lesson build)."""
    built = datetime.fromisoformat(LESSON["made_with"]["date"])
    for grid in LESSON["grids"].values():
        for name in (grid["sender"], grid["receiver"]):
            trained = datetime.fromisoformat(zoo.zoo_entry(name.removeprefix("zoo/"), paths.BUNDLED_ZOO)["trained_at"])
            assert trained < built, f"{name} was retrained after the bundle was built"


def test_the_seed_diagonal_beside_the_paper_recipe(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    bundled.install(store)
    (diagonal,) = seed_check.find(store, PAPER_FULL)
    seeds = LESSON["grids"]["seeds"]
    assert diagonal["receiver"] == seeds["receiver"] and diagonal["bundled"]
    assert diagonal["cells"] == [(layer, seeds["accuracy"][k][k]) for k, layer in enumerate(seeds["sender_layers"])]
    assert seed_check.find(store, grid_config("a", "b", "instant", "quick")) == []  # none bundled


@pytest.fixture
def fresh_app(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "fresh.sqlite3"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_first_screen_opens_on_the_bundled_task_trained_grid_with_its_controls(fresh_app):
    at = fresh_app
    assert at.radio(key="recipe").value.startswith("Paper recipe")
    assert at.radio(key="budget").value.startswith("Full")
    assert at.multiselect(key="controls").value == ["random-sender", "random-receiver", "random-both"]
    heatmaps = [c for c in at.get("plotly_chart") if (c.key or "").startswith("heatmap_")]
    assert len(heatmaps) == 4  # the real grid and its three controls, no wait
    note = " ".join(i.value for i in at.info)
    assert "bundled with StitchLab" in note and LESSON["made_with"]["device"] in note
    assert "Sanity check beside it" in " ".join(c.value for c in at.caption)
    check = next(c.value for c in at.caption if "Sanity check beside it" in c.value)
    assert "(bundled)" in check and "stem 0.66" in check and "Paper recipe (3 epochs from scratch) gives, not as " \
        "proof" in check
    assert not any("No grid stored" in i.value for i in at.info)


def test_the_first_screen_offers_the_quick_recipe_for_a_run_on_this_cpu(fresh_app):
    """Its Paper recipe on every image takes hours on a CPU, and Run would have started just that."""
    at = fresh_app
    at.button(key="use_quick_recipe").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="recipe").value == recipes.RECIPES["quick"].label
    assert at.radio(key="budget").value == recipes.BUDGETS["quick"].label
    assert at.multiselect(key="controls").value == ["random-sender", "random-receiver", "random-both"]  # kept
    assert any("No grid stored" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "use_quick_recipe"]


def test_a_bundled_cell_says_it_holds_accuracies_only(fresh_app):
    at = fresh_app
    at.selectbox(key="cell_i").set_value("layer4.0")
    at.selectbox(key="cell_j").set_value("stem").run()
    assert not at.exception, [e.value for e in at.exception]
    deeper = LESSON["grids"]["deeper"]
    assert f"{deeper['accuracy'][4][0]:.3f}" in [m.value for m in at.metric]
    assert any("holds accuracies only" in c.value for c in at.caption)


def test_after_the_first_screen_a_change_keeps_the_other_settings(fresh_app):
    at = fresh_app
    at.radio(key="budget").set_value("Quick: 2,000 training / 1,000 test images").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="recipe").value.startswith("Paper recipe")
    assert at.multiselect(key="controls").value == ["random-sender", "random-receiver", "random-both"]


def test_another_dataset_does_not_open_on_the_bundled_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "cifar.sqlite3"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "cifar10"
    at.run()
    assert not at.radio(key="recipe").value.startswith("Paper recipe")
    assert at.multiselect(key="controls").value == []


def _install(db: str) -> int:
    return len(bundled.install(Store(db)))


def test_servers_starting_together_store_each_bundled_grid_once(tmp_path):
    """Each bundled grid is written whole in one transaction that first looks for it: never half
    written, never twice (4 processes at once)."""
    from concurrent.futures import ProcessPoolExecutor

    db = str(tmp_path / "shared.sqlite3")
    Store(db)
    with ProcessPoolExecutor(4) as pool:
        added = list(pool.map(_install, [db] * 4))
    assert sum(added) == len(LESSON["grids"])
    runs_stored = Store(db).list_runs(kind="grid")
    assert len(runs_stored) == len(LESSON["grids"]) and all(r["status"] == "done" for r in runs_stored)
