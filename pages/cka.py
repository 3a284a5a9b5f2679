"""CKA: representational similarity of every layer pair, beside the stitching heatmap."""

import streamlit as st

from core import runs
from core.runs.cka_runs import cka_config
from ui import charts, grid_view, jobs, navigation
from ui.analysis import agreement, disagreements
from ui.grids import grid_json, grids_of_pair, run_picker
from ui.state import store

navigation.through_app()

sel = st.session_state.selection
st.title("CKA: do the layers represent the images alike?")
st.caption("Centred kernel alignment compares what two layers compute on the same test images (1 = the same up "
           "to rotation and scale). Stitching asks whether the receiver can *use* the sender's layer. Where do the "
           "two disagree?")

left, right = st.columns(2)
kernel = left.radio("Kernel", ["linear", "rbf"], key="cka_kernel", bind="query-params", horizontal=True)
images = right.select_slider("Test images", [500, 1000, 2000, 5000, 10000], value=2000, key="cka_images",
                             bind="query-params")
config = cka_config(sel.sender, sel.receiver, kernel=kernel, limit=images, dataset=sel.dataset)
found = runs.find(store(), "cka", config)
if found is None and st.button("Compute CKA", type="primary"):
    jobs.submit("cka", [config], sel.device)
jobs.progress_panel()
jobs.show_errors()
if found is None:
    st.info("No CKA matrix stored for these settings yet: press **Compute CKA** (4–8 s for 2,000 images on "
            "two CPU cores).")
    st.stop()

cka = runs.load(store(), found["id"])
grids = grids_of_pair(sel.sender, sel.receiver, control="none")
# The newest by default; an older recipe, or the bundled task-trained grid, on demand (the URL holds
# the choice's label, ?cka_grid=..., which ends with its run id).
chosen = run_picker("Stitching grid to compare with", grids, key="cka_grid") if grids else None
left, right = st.columns(2)
grid_view.plot(charts.cka_heatmap(cka, width=grid_view.column_width(2)), "cka_heatmap", left, square=True)
if chosen is None:
    right.info("Run a stitching grid for this pair (Stitching page) to compare the two measures.")
    st.stop()
grid = grid_json(chosen)
with right:
    grid_view.heatmap(grid, "accuracy", key="cka_page_grid", selectable=False, width=grid_view.column_width(2))
points, rho = agreement(cka, grid)
st.subheader("Similar representations, or just usable ones?")
if rho is not None:
    st.metric("Spearman rank correlation, CKA vs stitched accuracy", f"{rho:+.2f}",
              help="+1: the two measures order the cells the same way; 0: unrelated.")
grid_view.plot(charts.agreement_scatter(points), "cka_scatter")
st.markdown("**Where they disagree most** (by rank):")
st.dataframe(disagreements(points), hide_index=True)
