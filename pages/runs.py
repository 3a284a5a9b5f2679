"""Runs: everything stored, to filter, reopen, rename, delete, export and compare."""

import hashlib
import json

import pandas as pd
import streamlit as st

from core import runs as stored_runs
from core.runs import lifecycle
from ui import charts, compare, grid_view, grids, jobs, navigation
from ui.analysis import similarity_heatmaps, stitch_cka_panel
from ui.grids import grid_json, grid_rows, settings_of
from ui.state import store
from ui.text import plain

navigation.through_app()

st.title("Runs")
jobs.progress_panel()
jobs.show_errors()
runs = store().list_runs()
if not runs:
    st.info("Nothing stored yet: run a grid on the Stitching page.")
    st.stop()

left, mid, right = st.columns(3)
kinds = left.multiselect("Kind", sorted({r["kind"] for r in runs}), key="runs_kind", bind="query-params")
statuses = mid.multiselect("Status", sorted({r["status"] for r in runs}), key="runs_status", bind="query-params")
text = right.text_input("Search (run id, model, layer, name)", key="runs_text", bind="query-params")
shown = [r for r in runs if (not kinds or r["kind"] in kinds) and (not statuses or r["status"] in statuses)
         and text.lower() in json.dumps([r["id"], r["name"], r["config"]]).lower()]
cells = store().cell_counts([r["id"] for r in shown])
table = pd.DataFrame([grids.run_row(r, cells.get(r["id"], 0)) for r in shown])
# The table's key follows the rows shown: a selected row index never outlives a filter or a
# delete, where it would point at another run (or past the end).
listing = hashlib.sha1(",".join(r["id"] for r in shown).encode()).hexdigest()[:10]
picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                      key=f"runs_table_{listing}")
rows = [k for k in (picked.selection.rows if picked else []) if k < len(shown)]
# A row clicked opens its run through the picker below, which the URL holds (?run=<id>: a copied
# link reopens the run). Only a new click moves it: the table keeps its selection highlighted
# while the picker may have moved on.
click = (listing, tuple(rows))
if rows and st.session_state.get("runs_last_click") != click:
    st.session_state["run"] = shown[rows[0]]["id"]
st.session_state["runs_last_click"] = click
run_id = st.selectbox("Open run", [r["id"] for r in shown], index=None, key="run", bind="query-params",
                      placeholder="select a row of the table")
if run_id is None:
    st.caption(f"{len(shown)} of {len(runs)} runs. Select a row to open it.")
    st.stop()

run = next(r for r in shown if r["id"] == run_id)
st.subheader(f"Run {run['id']}" + (f" · {plain(run['name'])}" if run["name"] else ""))
name_col, action_col = st.columns([3, 1])
new_name = name_col.text_input("Name", value=run["name"] or "", key=f"rename_{run['id']}")
if action_col.button("Rename") and new_name != (run["name"] or ""):
    store().rename_run(run["id"], new_name)
    st.rerun()
running = run["status"] == "running"
confirm = action_col.checkbox("Delete this run", key=f"del_{run['id']}",
                              help="It is being computed: its job is cancelled first." if running else None)
if confirm and action_col.button("Cancel and delete" if running else "Really delete", type="primary"):
    lifecycle.delete(store(), run["id"])
    st.rerun()

cka = stored_runs.load(store(), run["id"]) if run["kind"] == "cka" else None
if cka is not None:
    grid_view.plot(charts.cka_heatmap(cka, width=grid_view.column_width(1)), "runs_cka_heatmap", square=True)
    st.download_button("Export CSV", pd.DataFrame(grids.cka_rows(cka)).to_csv(index=False),
                       f"stitchlab-{run['id']}.csv", "text/csv")
    st.download_button("Export JSON", json.dumps(cka, indent=2), f"stitchlab-{run['id']}.json", "application/json")
    st.stop()
similarity = stored_runs.load(store(), run["id"]) if run["kind"] == "similarity" else None
if similarity is not None:  # each measure on the stitching grid's axes, as the Similarity page draws it
    similarity_heatmaps(similarity, None)
    st.download_button("Export CSV", pd.DataFrame(grids.similarity_rows(similarity)).to_csv(index=False),
                       f"stitchlab-{run['id']}.csv", "text/csv")
    st.download_button("Export JSON", json.dumps(similarity, indent=2), f"stitchlab-{run['id']}.json",
                       "application/json")
    st.stop()
if run["kind"] != "grid":
    st.json(run["summary"] or run["config"], expanded=False)
    st.stop()
grid = grid_json(run)
grid_view.heatmap(grid, "accuracy", key="runs_heatmap")
picked = grid_view.cell_picker([(i, j) for i in grid["sender_layers"] for j in grid["receiver_layers"]])
if picked:  # any stored grid, also one the Stitching page's settings cannot reproduce (CLI, sweeps)
    grid_view.cell_details(grid, *picked, stitch_cka=stitch_cka_panel)
st.download_button("Export CSV", pd.DataFrame(grid_rows(grid)).to_csv(index=False), f"stitchlab-{run['id']}.csv",
                   "text/csv")
st.download_button("Export JSON", json.dumps(grid, indent=2), f"stitchlab-{run['id']}.json", "application/json")
st.caption("Every chart's camera button (top right of the chart) saves it as a PNG.")
settings = settings_of(run["config"])
if settings and st.button("Open in the Stitching page", icon=":material/join:", on_click=grids.use_settings,
                          args=(settings,)):
    navigation.switch_to("stitching")

st.subheader("Compare with another grid of the same layers")
others = compare.comparable(run, store().list_runs(kind="grid"))
pair = (run["config"]["sender"], run["config"]["receiver"])
other = grids.run_picker("Grid B, subtracted from this one (A)", others, key="runs_compare", default=None,
                         with_pair=any((r["config"]["sender"], r["config"]["receiver"]) != pair for r in others),
                         placeholder="a random control, another recipe, …") if others else None
if not others:
    st.caption("No other stored grid has these sender and receiver layers.")
elif other is not None:  # of the same layers (comparable): difference() cannot refuse it
    diff = compare.difference(grid, grid_json(other))
    grid_view.plot(compare.difference_figure(diff, width=grid_view.column_width(1)), "runs_difference", square=True)
    if diff["mean"] is not None:
        st.caption(f"Mean A − B over the {diff['cells']} cells both grids have: {diff['mean']:+.3f}. Red: A stitches "
                   "better; blue: B does.")
