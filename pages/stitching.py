"""Stitching: a grid of stitches from every sender layer into every receiver layer."""

import streamlit as st

from core.models import catalog
from ui import grid_view, grids, jobs, navigation
from ui.analysis import stitch_cka_panel
from ui.grids import (
    BUDGETS,
    CONTROL_LABELS,
    RECIPES,
    find_grid,
    grid_config,
    grid_json,
    seed_check_grids,
    seed_checks,
    start,
    time_hint,
)
from ui.state import dataset_mismatch

navigation.through_app()

sel = st.session_state.selection
st.title("Model stitching")
st.caption("Freeze both networks, train only a small stitch layer from the sender's layer *i* into the receiver's "
           "layer *j*, and score the stitched network on the test set. High accuracy: the receiver can use what "
           "the sender computed.")

with st.expander("Settings", expanded=True):
    # The first screen opens on the pair's bundled task-trained grid and its controls, when there is
    # one: put into the widgets' state before they exist (their defaults stay fixed, so a default
    # never moves under a choice, and the URL records these settings as it records any choice).
    grids.seed_first_screen(sel)
    left, right = st.columns(2)
    s_layers = left.multiselect("Sender layers (rows)", [n for n, _ in catalog.layers_of(sel.sender)],
                                key="s_layers", bind="query-params", placeholder="all layers")
    r_layers = right.multiselect("Receiver layers (columns)", [n for n, _ in catalog.layers_of(sel.receiver)],
                                 key="r_layers", bind="query-params", placeholder="all layers")
    recipe = left.radio("Recipe", list(RECIPES), key="recipe", bind="query-params")
    left.caption(RECIPES[recipe].why[0].upper() + RECIPES[recipe].why[1:] + ".")
    budget = right.radio("Images", list(BUDGETS), key="budget", bind="query-params")
    controls = st.multiselect("Controls: the same grid with random-initialised networks", list(CONTROL_LABELS),
                              key="controls", bind="query-params",
                              help="random-sender: a randomly initialised sender; random-receiver: a random "
                                   "receiver; random-both: both. Trained stitches on random networks show how "
                                   "much a stitch can do on its own.")
    configs = {"none": grid_config(sel, s_layers, r_layers, recipe, budget)}
    configs.update({c: grid_config(sel, s_layers, r_layers, recipe, budget, control=c) for c in controls})
    run = st.button("Run", type="primary", icon=":material/play_arrow:")
    st.caption(time_hint(list(configs.values()), sel.device))
# Networks scored on a dataset they were not trained on stitch at chance: nothing to run or show.
if mismatch := dataset_mismatch(sel.sender, sel.receiver, sel.dataset):
    st.error(mismatch)
    st.stop()
if run and not start(list(configs.values()), sel.device):
    st.toast("These grids are already stored (or running): shown below.")
jobs.progress_panel()
jobs.show_errors()

runs = {control: find_grid(config) for control, config in configs.items()}
if runs["none"] is None:
    st.info("No grid stored for these settings yet. Press **Run** (the time it should take is under the button).")
    st.stop()

grid = grid_json(runs["none"])
metric = st.radio("Colour by", ["accuracy", "penalty", "relative"], key="metric", bind="query-params",
                  horizontal=True,
                  help="penalty = receiver accuracy − stitched accuracy; relative = stitched / receiver")
a, b, c = st.columns(3)
a.metric("sender alone", f"{grid['sender_accuracy']:.3f}" if grid["sender_accuracy"] is not None else "–")
b.metric("receiver alone", f"{grid['reference_accuracy']:.3f}" if grid["reference_accuracy"] is not None else "–")
c.metric("this grid", grid["run_status"], f"{grid['seconds']:.1f} s · run {grid['run_id']}", delta_color="off")

# The real grid large; its controls, when there are any, side by side below it at a glance.
main, _ = st.columns(2) if len(runs) > 1 else (st.container(), None)
with main:
    grid_view.heatmap(grid, metric, key="heatmap_none", width=grid_view.column_width(2 if len(runs) > 1 else 1))
shown = [(control, run_row) for control, run_row in runs.items() if control != "none" and run_row is not None]
for column, (control, run_row) in zip(st.columns(3) if shown else [], shown):
    with column:
        grid_view.heatmap(grid_json(run_row), metric, key=f"heatmap_{control}", selectable=False,
                          width=grid_view.column_width(3))
# Below the grids, so that the grid itself is on screen first (a projector's 720 pixels).
grid_view.bundled_note(runs["none"], recipe)
checks = seed_check_grids(configs["none"])
if checks and grid_view.sanity_check_note(recipe, seed_checks(configs["none"]), time_hint(checks, sel.device)) \
        and not start(checks, sel.device):
    st.toast("The sanity check is already stored (or running).")
with st.expander("Stitched accuracy along the receiver, with the networks' own accuracy as reference"):
    grid_view.plot(grid_view.charts.reference_profile(grid))

st.subheader("Cell details")
picked = grid_view.cell_picker([(i, j) for i in grid["sender_layers"] for j in grid["receiver_layers"]])
if picked:
    grid_view.cell_details(grid, *picked, stitch_cka=stitch_cka_panel)
