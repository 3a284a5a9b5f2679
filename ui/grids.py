"""Stitching grids as the pages see them: settings from widgets, stored results, cell details."""

from __future__ import annotations

import streamlit as st

from core import runs
from core.engine.results import CONTROLS, load_grid
from core.runs import recipes

from .state import Selection, store

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
