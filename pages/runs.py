"""Runs: everything stored, to filter, reopen, rename, delete and export."""

import hashlib
import json

import pandas as pd
import streamlit as st

from ui import grid_view, jobs
from ui.analysis import stitch_cka_panel
from ui.grids import grid_json, grid_rows, settings_of
from ui.state import store

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
table = pd.DataFrame([{"run": r["id"], "name": r["name"] or "", "kind": r["kind"], "status": r["status"],
                       "sender / model A": r["config"].get("sender", r["config"].get("model_a", "")),
                       "receiver / model B": r["config"].get("receiver", r["config"].get("model_b", "")),
                       "mode": r["config"].get("mode", ""), "control": r["config"].get("control", ""),
                       "created": pd.to_datetime(r["created"], unit="s").strftime("%Y-%m-%d %H:%M")}
                      for r in shown])
# The table's key follows the rows shown: a selected row index never outlives a filter or a
# delete, where it would point at another run (or past the end).
listing = hashlib.sha1(",".join(r["id"] for r in shown).encode()).hexdigest()[:10]
picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                      key=f"runs_table_{listing}")
rows = [k for k in (picked.selection.rows if picked else []) if k < len(shown)]
if not rows:
    st.caption(f"{len(shown)} of {len(runs)} runs. Select a row to open it.")
    st.stop()

run = shown[rows[0]]
st.subheader(f"Run {run['id']}" + (f" · {run['name']}" if run["name"] else ""))
name_col, action_col = st.columns([3, 1])
new_name = name_col.text_input("Name", value=run["name"] or "", key=f"rename_{run['id']}")
if action_col.button("Rename") and new_name != (run["name"] or ""):
    store().rename_run(run["id"], new_name)
    st.rerun()
confirm = action_col.checkbox("Delete this run", key=f"del_{run['id']}")
if confirm and action_col.button("Really delete", type="primary"):
    store().delete_run(run["id"])
    st.rerun()

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
if settings and st.button("Open in the Stitching page"):
    st.switch_page("pages/stitching.py", query_params=settings)
