"""Stitching grids as the pages see them: settings from widgets, stored results, cell details."""

from __future__ import annotations

import streamlit as st

from core.results import CONTROLS, GridConfig, load_grid

from .state import Selection, store

# What the Stitching page offers (label -> GridConfig fields).
RECIPES = {
    "Instant (least squares)": {"mode": "lstsq"},
    # Least squares then one epoch of task loss: converges in one epoch (Csiszárik et al. 2021).
    "Standard (least squares + 1 epoch)": {"mode": "lstsq+train", "epochs": 1.0},
    # The seed paper: random start, 3 epochs, SGD momentum 0.9, lr 0.01, batch 256, weight decay 0.01.
    "Paper recipe (3 epochs from scratch)": {"mode": "train", "epochs": 3.0, "lr": 0.01, "momentum": 0.9,
                                             "batch_size": 256, "weight_decay": 0.01},
}
BUDGETS = {
    "Quick: 2,000 training / 1,000 test images": {"train_limit": 2000, "eval_limit": 1000},
    "Full: every training and test image": {"train_limit": None, "eval_limit": None},
}
CONTROL_LABELS = {"random-sender": "random sender", "random-receiver": "random receiver",
                  "random-both": "both random"}


def grid_config(sel: Selection, sender_layers, receiver_layers, recipe: str, budget: str,
                control: str = "none") -> dict:
    """The GridConfig (as a dict) for the page's settings."""
    assert control in CONTROLS
    config = GridConfig(sender=sel.sender, receiver=sel.receiver, dataset=sel.dataset, control=control,
                        sender_layers=list(sender_layers) or None, receiver_layers=list(receiver_layers) or None,
                        **RECIPES[recipe], **BUDGETS[budget])
    return vars(config)


_MATCH_KEYS = [f for f in GridConfig.__dataclass_fields__]


def find_grid(config: dict) -> dict | None:
    """The newest stored run with these settings (on any device), or None."""
    for run in store().list_runs(kind="grid"):
        if all(run["config"].get(k) == config.get(k) for k in _MATCH_KEYS):
            return run
    return None


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
    stored complete nor already queued; True if a job was queued."""
    from core import jobs as core_jobs

    from .jobs import submit, watch

    todo = [c for c in configs if (run := find_grid(c)) is None or run["status"] != "done"]
    for job in core_jobs.list_jobs(store(), active_only=True):
        queued = job["params"].get("configs", [job["params"]])
        for config in list(todo):
            if any(all(q.get(k) == config.get(k) for k in _MATCH_KEYS) for q in queued):
                todo.remove(config)
                watch(job["id"])  # perhaps someone else's: follow it
    if not todo:
        return False
    return submit("grid", {"configs": todo, "device": device}) is not None


def settings_of(config: dict) -> dict | None:
    """The Stitching page's URL settings that reproduce a stored grid, or None if its recipe or
    budget is not one the page offers (a grid made from the CLI, say)."""
    recipe = next((label for label, fields in RECIPES.items()
                   if all(config.get(k) == v for k, v in fields.items())), None)
    budget = next((label for label, fields in BUDGETS.items()
                   if all(config.get(k) == v for k, v in fields.items())), None)
    if recipe is None or budget is None or config.get("pairs"):
        return None
    params = {"sender": config["sender"], "receiver": config["receiver"], "dataset": config["dataset"],
              "recipe": recipe, "budget": budget}
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
