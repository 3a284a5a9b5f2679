"""Stitching grids as the pages see them: settings from widgets, stored results, cell details."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from core import runs
from core.engine.results import CONTROLS, load_grid
from core.progress import Status
from core.runs import bundled, estimates, recipes, seed_check

from .state import Selection, store
from .text import duration

# What the Stitching page offers, by label (the URL holds the label): core/runs/recipes.py names them.
RECIPES = {r.label: r for r in recipes.RECIPES.values()}
BUDGETS = {b.label: b for b in recipes.BUDGETS.values()}
CONTROL_LABELS = {"random-sender": "random sender", "random-receiver": "random receiver",
                  "random-both": "both random"}


def grid_config(sel: Selection, sender_layers, receiver_layers, recipe: str, budget: str,
                control: str = "none") -> dict:
    """The grid's full settings (a GridConfig as a dict) for the page's widgets."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}: one of {', '.join(CONTROLS)}")
    return recipes.grid_config(sel.sender, sel.receiver, recipe, budget, dataset=sel.dataset, control=control,
                               sender_layers=list(sender_layers) or None,
                               receiver_layers=list(receiver_layers) or None)


def find_grid(config: dict, device: str = "auto") -> dict | None:
    """The newest run (finished or not: a running grid shows its cells as they come) with these
    settings and these weights on ``device`` ("auto": any)."""
    return runs.find(store(), "grid", config, device, statuses=None)


def grids_of_pair(sender: str, receiver: str, statuses=("done",), control: str | None = None) -> list[dict]:
    """Stored grid runs from ``sender`` into ``receiver`` (newest first) in one of ``statuses``,
    of one ``control`` if given."""
    return [r for r in store().list_runs(kind="grid") if r["status"] in statuses
            and r["config"]["sender"] == sender and r["config"]["receiver"] == receiver
            and (control is None or r["config"].get("control", "none") == control)]


@st.cache_data(max_entries=64, show_spinner=False)
def _grid_json(db: str, run_id: str, updated: float) -> dict:
    # `updated` is part of the cache key: a run that gains cells is read again.
    return load_grid(store(), run_id).to_json()


def grid_json(run: dict) -> dict:
    data = _grid_json(str(store().path), run["id"], run["updated"])
    return {**data, "run_name": run.get("name"), "run_status": run["status"]}


def cell(run_id: str, sender_layer: str, receiver_layer: str) -> dict | None:
    for c in store().cells(run_id):
        if c["sender_layer"] == sender_layer and c["receiver_layer"] == receiver_layer:
            return c
    return None


def start(configs: list[dict], device: str) -> bool:
    """Queue the grids (a grid and its controls: one job, one shared data pass) that are neither
    stored finished nor queued already (by anyone); follow the jobs that hold them. True if a job
    was queued."""
    from .jobs import submit

    return submit("grid", configs, device)


def settings_of(config: dict) -> dict | None:
    """The Stitching page's URL settings that reproduce a stored grid, or None if its recipe or
    budget is not one the page offers (a grid made from the CLI, say)."""
    recipe, budget = recipes.recipe_of(config)
    if recipe is None or budget is None or config.get("pairs"):
        return None
    params = {"sender": config["sender"], "receiver": config["receiver"], "dataset": config["dataset"],
              "recipe": recipe.label, "budget": budget.label}
    if config.get("sender_layers"):
        params["s_layers"] = config["sender_layers"]
    if config.get("receiver_layers"):
        params["r_layers"] = config["receiver_layers"]
    if config.get("control", "none") != "none":
        params["controls"] = [config["control"]]
    return params


def use_settings(settings: dict) -> None:
    """Open the Stitching page on a stored grid's settings (from :func:`settings_of`): a button's
    ``on_click``, followed by ``navigation.switch_to("stitching")``.

    Not ``st.switch_page(query_params=...)``: those keys are bound to the URL and Streamlit
    refuses code that sets a bound parameter (every "Open" crashed). The widgets write the URL.

    Put into the widgets' state now and again in the Stitching page's first run, before its
    widgets exist (:func:`apply_pending_settings`): ``on_click`` runs before the *source* page's
    run, and the page switch that follows can drop widget state Streamlit had not yet stored (the
    Stitching page came up with the default receiver in 3 of 11 runs of tests/test_e2e_clicks.py)."""
    settings = _with_unset(settings)
    st.session_state.update(settings)
    st.session_state[_PENDING_SETTINGS] = settings


_PENDING_SETTINGS = "_settings_for_stitching"


def use_recipe(recipe: str, budget: str) -> None:
    """A Stitching-page button's ``on_click``: its recipe and images set to ``recipe`` and ``budget``
    (keys of core.runs.recipes), the other settings kept. Before the page's next run, so before
    its widgets exist: allowed for keys bound to the URL, which the widgets then update."""
    st.session_state.update(recipe=recipes.RECIPES[recipe].label, budget=recipes.BUDGETS[budget].label)


def _with_unset(settings: dict) -> dict:
    """``settings`` with the layer and control choices it leaves out emptied (not the last grid's)."""
    return {"s_layers": [], "r_layers": [], "controls": [], **settings}


def apply_pending_settings(page_name: str) -> None:
    """Called by app.py before any widget, with the name of the page this run shows: on the
    Stitching page, set the settings :func:`use_settings` left for it."""
    if page_name == "stitching":
        st.session_state.update(st.session_state.pop(_PENDING_SETTINGS, {}))


def bundled_settings(sender: str, receiver: str, dataset: str = "fashion-mnist") -> dict | None:
    """The Stitching page's settings (recipe, budget, controls) that show the bundled grid of this
    pair with its bundled controls: what the first screen opens on. None: no bundled grid."""
    rows = [r for r in store().list_runs(kind="grid") if bundled.provenance(r)
            and r["config"]["sender"] == sender and r["config"]["receiver"] == receiver
            and r["config"].get("dataset") == dataset]
    real = next((r for r in sorted(rows, key=lambda r: r["config"]["mode"] != "train")  # task-trained first
                 if r["config"].get("control", "none") == "none"), None)
    settings = settings_of(real["config"]) if real else None
    if settings is None:
        return None
    same_recipe = [r for r in rows if recipes.recipe_of(r["config"]) == recipes.recipe_of(real["config"])]
    settings["controls"] = [c for c in CONTROL_LABELS if any(r["config"].get("control") == c for r in same_recipe)]
    return settings


FIRST_SCREEN_KEYS = ("recipe", "budget", "controls", "s_layers", "r_layers")


def seed_first_screen(sel: Selection) -> None:
    """On a session's first view of the Stitching page with no settings in the URL, set its
    widgets to the selected pair's bundled grid (recipe, images, controls), if there is one.

    Into the widgets' state only: their defaults stay fixed (a default that moved would reset a
    widget under the user's choice). Not into the URL too: parameters set there before the widgets
    bind them broke the Runs page's "Open in the Stitching page" (the sidebar kept a stale value).
    So a link copied after changing only one of these settings reopens the others as seeded here."""
    if any(k in st.session_state or k in st.query_params for k in FIRST_SCREEN_KEYS):
        return
    first = bundled_settings(sel.sender, sel.receiver, sel.dataset)
    if first:
        # This run's widgets only: nothing left pending, which would set them again over the user's
        # first change.
        st.session_state.update(_with_unset({k: first[k] for k in ("recipe", "budget", "controls")}))


def seed_checks(config: dict) -> list[dict]:
    """The stored sanity check of this grid's recipe and images (:func:`core.runs.seed_check.find`)."""
    return seed_check.find(store(), config)


def seed_check_grids(config: dict) -> list[dict]:
    """The grids that make that check, to run (:func:`core.runs.seed_check.check_configs`)."""
    return seed_check.check_configs(config)


def time_hint(configs: list[dict], device: str) -> str:
    """How long Run should take for these grids (a grid and its controls) on ``device``, computed
    for their pair, recipe and images (:mod:`core.runs.estimates`)."""
    # The worker picks the GPU for "auto" when there is one; the page may not import torch to ask.
    gpu = device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())
    found = [estimates.estimate(store(), config, "cuda" if gpu else "cpu") for config in configs]
    cells = sum(estimates.cells_of(config) for config in configs)
    if None in found:
        return f"{cells} cells on the GPU: seconds to minutes (no grid of these settings has run on it here yet)."
    seconds = sum(f.seconds for f in found)
    return f"{cells} cells: {duration(seconds)} on {'the GPU' if gpu else 'this CPU'} ({found[0].source})."


def grid_rows(grid: dict) -> list[dict]:
    """One row per cell, for CSV export."""
    rows = []
    for r, i in enumerate(grid["sender_layers"]):
        for c, j in enumerate(grid["receiver_layers"]):
            rows.append({"sender": grid["sender"], "receiver": grid["receiver"], "sender_layer": i,
                         "receiver_layer": j, "status": grid["status"][r][c], "accuracy": grid["accuracy"][r][c],
                         "penalty": grid["penalty"][r][c], "relative": grid["relative"][r][c],
                         "control": grid["control"], "mode": grid["mode"]})
    return rows


def cka_rows(cka: dict) -> list[dict]:
    """One row per layer pair of a stored CKA matrix (``CkaResult.to_json()``), for CSV export."""
    return [{"model_a": cka["model_a"], "model_b": cka["model_b"], "layer_a": a, "layer_b": b,
             "kernel": cka.get("kernel", "linear"), "cka": cka["cka"][r][c]}
            for r, a in enumerate(cka["layers_a"]) for c, b in enumerate(cka["layers_b"])]


def similarity_rows(similarity: dict) -> list[dict]:
    """One row per measure and layer pair of a stored similarity result
    (``SimilarityResult.to_json()``), for CSV export."""
    return [{"model_a": similarity["model_a"], "model_b": similarity["model_b"], "measure": name,
             "higher_is_similar": measure["higher_is_similar"], "layer_a": a, "layer_b": b,
             "value": measure["matrix"][r][c]}
            for name, measure in similarity["measures"].items()
            for r, a in enumerate(similarity["layers_a"]) for c, b in enumerate(similarity["layers_b"])]


# --- stored runs in words: the Runs table, and every picker of a stored grid --------------------
def run_label(run: dict, with_pair: bool = False) -> str:
    """A stored grid in words: recipe, networks (real or a random control), images, date, and
    "bundled" for one that ships with StitchLab; e.g. ``Paper recipe (3 epochs from scratch) ·
    real networks · every image · 2026-11-30 14:05 · bundled``. ``with_pair`` starts it with the
    networks (a choice among several pairs)."""
    config = run["config"]
    recipe, _ = recipes.recipe_of(config)
    parts = [f"{config['sender']} → {config['receiver']}"] if with_pair else []
    parts += [recipe.label if recipe else _mode_words(config),
              CONTROL_LABELS.get(config.get("control", "none"), "real networks")]
    parts.append(training_and_test_words(config.get("train_limit"), config.get("eval_limit"), "every image"))
    if config.get("sender_layers") or config.get("receiver_layers") or config.get("pairs"):
        parts.append("some layers")
    made = bundled.provenance(run)
    # A bundled grid's date is when it was computed, not when this store installed it.
    when = datetime.fromisoformat(made["date"]).timestamp() if made and made.get("date") else run["created"]
    parts.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(when)))
    if made:
        parts.append("bundled")
    # Only a final status: a label is what a bound picker puts in the URL, and a link copied while
    # a grid runs must still name it once it is done.
    if run["status"] in (Status.CANCELLED, Status.FAILED):
        parts.append(f"{run['status']}: some cells missing")
    return " · ".join(parts)


def run_row(run: dict, stored_cells: int = 0) -> dict:
    """A stored run as a row of the Runs table: what it is in words (recipe, images, layers),
    how many of its cells are stored, and whether it ships with StitchLab."""
    config, kind = run["config"], run["kind"]
    recipe = recipes.recipe_of(config)[0] if kind == "grid" else None
    return {"run": run["id"], "name": run["name"] or "", "kind": kind, "status": run["status"],
            "sender / model A": config.get("sender", config.get("model_a", "")),
            "receiver / model B": config.get("receiver", config.get("model_b", "")),
            "recipe": (recipe.label if recipe else "custom") if kind == "grid" else "",
            "images": images_words(config) if kind in ("grid", "cka") else "",
            "layers": layers_words(config) if kind in ("grid", "cka") else "",
            "cells": _cells_words(run, stored_cells) if kind == "grid" else "",
            "mode": config.get("mode", ""), "control": config.get("control", ""),
            "origin": "bundled with StitchLab" if bundled.provenance(run) else "computed here",
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created"]))}


def images_words(config: dict) -> str:
    """A grid's training / test images (``2,000 / 1,000``), a CKA run's test images (``2,000``);
    ``all`` where every image is used."""
    if "limit" in config:  # a CKA run
        return _count(config["limit"], "all")
    train, test = config.get("train_limit"), config.get("eval_limit")
    return "all" if train is None and test is None else f"{_count(train, 'all')} / {_count(test, 'all')}"


def layers_words(config: dict) -> str:
    """The layers a grid (or a CKA run) covers: ``all``, or its lists (``stem, layer1.0 → all``)."""
    if config.get("pairs"):
        return f"{len(config['pairs'])} chosen pairs"
    rows, cols = (config.get("sender_layers"), config.get("receiver_layers")) if "sender" in config else \
        (config.get("layers_a"), config.get("layers_b"))
    if not rows and not cols:
        return "all"
    return f"{', '.join(rows) if rows else 'all'} → {', '.join(cols) if cols else 'all'}"


def first_to_compare(runs: list[dict]) -> int:
    """Which of a pair's stored grids (newest first) a page compares with by default: the newest
    one computed here, else the bundled task-trained grid (the paper's finding), not the bundled
    least-squares one, which imitates the receiver's activation and so reads like a similarity
    index itself."""
    own = next((k for k, run in enumerate(runs) if not bundled.provenance(run)), None)
    if own is not None:
        return own
    return next((k for k, run in enumerate(runs) if run["config"].get("mode") == "train"), 0)


def run_picker(label: str, runs: list[dict], key: str, default: int | None = 0, where=None,
               with_pair: bool = False, **kwargs) -> dict | None:
    """A selectbox of stored grids in words (:func:`run_label`), newest first, bound to the URL
    (``?key=``), so a copied link reopens the same choice. ``default``: the option shown where the
    URL names none of ``runs`` (None: nothing chosen). Returns the chosen run or None.

    A bound selectbox keeps its option's label in the URL, and two grids can have the same
    label in words: each ends with its run id, which names one (and finds it on the Runs page)."""
    by_id = {r["id"]: r for r in runs}
    labels = {run_id: f"{run_label(run, with_pair)} · run {run_id}" for run_id, run in by_id.items()}
    chosen = (where or st).selectbox(label, list(by_id), index=default, format_func=labels.get, key=key,
                                     bind="query-params", **kwargs)
    return by_id.get(chosen)


def _cells_words(run: dict, stored_cells: int) -> str:
    summary, config = run["summary"] or {}, run["config"]
    if config.get("pairs"):
        expected = len(config["pairs"])
    elif summary.get("sender_layers") and summary.get("receiver_layers"):
        expected = len(summary["sender_layers"]) * len(summary["receiver_layers"])
    elif config.get("sender_layers") and config.get("receiver_layers"):
        expected = len(config["sender_layers"]) * len(config["receiver_layers"])
    else:  # queued: the layer lists are read when the grid starts
        expected = "?"
    return f"{stored_cells} / {expected}"


def _mode_words(config: dict) -> str:
    epochs = f"{config.get('epochs', 1):g} epoch" + ("" if config.get("epochs", 1) == 1 else "s")
    return {"lstsq": "least squares", "lstsq+train": f"least squares + {epochs} of training"}.get(
        config.get("mode"), f"task-trained {epochs}")


def training_and_test_words(train: int | None, test: int | None, every: str) -> str:
    """A grid's image budget in a sentence: ``2,000 training / 1,000 test images``, or ``every``."""
    return every if train is None and test is None else f"{_count(train)} training / {_count(test)} test images"


def _count(limit: int | None, every: str = "every") -> str:
    return every if limit is None else f"{limit:,}"
