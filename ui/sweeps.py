"""The Sweeps page's views: progress of a sweep and its summary across grids."""

from __future__ import annotations

import streamlit as st

from core.runs.sweep import depth_table, paper_effect, sweep_status, sweep_summary

from . import charts
from .state import store

REGIONS = {"lower_left": "later sender → earlier receiver", "diagonal": "same relative depth",
           "upper_right": "earlier sender → later receiver"}


@st.fragment(run_every=2.0)
def progress(sweep_id: str) -> None:
    """Counts and a progress bar; refreshes every 2 s while the sweep runs."""
    status = sweep_status(store(), sweep_id)
    total = max(status["total"], 1)
    st.progress(status["done"] / total, text=f"{status['done']} of {status['total']} grids done · "
                                             f"{status['running']} running · {status['failed']} failed · "
                                             f"sweep {status['status']}")
    if status["status"] != "running" and st.session_state.get(f"sweep_live_{sweep_id}"):
        st.session_state[f"sweep_live_{sweep_id}"] = False
        st.rerun(scope="app")
    st.session_state[f"sweep_live_{sweep_id}"] = status["status"] == "running"


def grids_table(sweep_id: str) -> list[dict]:
    return sweep_status(store(), sweep_id)["grids"]


def summary(sweep_id: str) -> list[dict]:
    """Every scored cell of the sweep (``core.runs.sweep.sweep_summary``), read again only when one of
    its grids changes state: a sweep of the paper's size has tens of thousands of cells."""
    version = tuple((g["run_id"], g["status"]) for g in sweep_status(store(), sweep_id)["grids"])
    return _summary(str(store().path), sweep_id, version)


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(db: str, sweep_id: str, version: tuple) -> list[dict]:
    return sweep_summary(store(), sweep_id)


def effect_rows(sweep_id: str) -> list[dict]:
    """Mean stitched accuracy per control and region (the seed paper's finding), as table rows."""
    effect = paper_effect(summary(sweep_id))
    return [{"control": control, **{REGIONS[r]: (None if v["mean_accuracy"] is None else round(v["mean_accuracy"], 3))
                                    for r, v in regions.items()}}
            for control, regions in sorted(effect.items())]


def depth_heatmaps(sweep_id: str, bins: int = 4) -> dict:
    """Per control, mean accuracy by (sender depth bin, receiver depth bin) as a figure."""
    table = depth_table(summary(sweep_id), bins)
    labels = [f"{k / bins:.2f}–{(k + 1) / bins:.2f}" for k in range(bins)]
    figures = {}
    for control in sorted({row["control"] for row in table}):
        values = [[None] * bins for _ in range(bins)]
        for row in table:
            if row["control"] == control:
                values[row["sender_bin"]][row["receiver_bin"]] = row["mean_accuracy"]
        figures[control] = charts.layer_grid(values, labels, labels, title=f"control: {control}",
                                             row_title="sender layer depth", col_title="receiver layer depth",
                                             colorbar="mean stitched accuracy", zrange=(0.0, 1.0),
                                             hover_name="mean accuracy")
    return figures
