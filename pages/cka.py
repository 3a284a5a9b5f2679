"""Similarity: representational similarity indices of every layer pair, beside the stitching heatmap,
and how far each agrees with stitching. (The file and its URL, /cka, keep their first name: links
to the CKA page it grew from still open it.)"""

import json

import streamlit as st

from core.runs.similarity_runs import similarity_configs
from ui import jobs, navigation
from ui.analysis import (
    agreement_section,
    offered_measures,
    over_budget,
    similarity_heatmaps,
    similarity_time_hint,
    stored_similarity,
)
from ui.grids import first_to_compare, grid_json, grids_of_pair, run_picker
from ui.state import dataset_mismatch

navigation.through_app()

sel = st.session_state.selection
st.title("Similarity: do the layers represent the images alike?")
st.caption("Similarity indices compare what two layers compute on the same test images; stitching asks whether the "
           "receiver can *use* the sender's layer. Which index agrees with stitching, and where do they disagree?")

if mismatch := dataset_mismatch(sel.sender, sel.receiver, sel.dataset):  # a choice, but rarely the intended one
    st.warning(f"{mismatch[:-1]}; the indices below compare them on images they were never trained on.")
catalogue = offered_measures()
left, right = st.columns([3, 2])
default = ["rbf-cka" if st.query_params.get("cka_kernel") == "rbf" else "linear-cka"]  # an old CKA page link
chosen = left.multiselect("Measures", list(catalogue), default=[n for n in default if n in catalogue],
                          format_func=lambda name: catalogue[name]["label"], key="sim_measures", bind="query-params",
                          help="; ".join(f"{m['label']}: {m['summary']}" for m in catalogue.values()))
images = right.select_slider("Test images", [500, 1000, 2000, 5000, 10000], value=2000, key="cka_images",
                             bind="query-params")
if not chosen:
    st.info("Pick at least one similarity measure.")
    st.stop()
if problem := over_budget(sel.sender, sel.receiver, images):
    st.warning(f"{problem[0].upper()}{problem[1:]}.")
    st.stop()
configs = similarity_configs(sel.sender, sel.receiver, chosen, limit=images, dataset=sel.dataset)
similarity, missing = stored_similarity(configs)
if missing and st.button("Compute", type="primary"):
    jobs.submit("similarity", missing, sel.device)
if missing:
    st.caption(similarity_time_hint(missing))
jobs.progress_panel()
jobs.show_errors()
if missing:
    names = ", ".join(catalogue[c["measures"][0]]["label"] for c in missing)
    st.info(f"Not stored for {images:,} test images yet: {names}. Press **Compute**: the worker runs the images "
            "through both networks once and computes each measure from the same features.")

grids = grids_of_pair(sel.sender, sel.receiver, control="none")
# The newest computed here, else the bundled task-trained grid; any other on demand (the URL holds
# the choice's label, ?cka_grid=..., which ends with its run id).
picked = run_picker("Stitching grid to compare with", grids, key="cka_grid",
                    default=first_to_compare(grids)) if grids else None
grid = grid_json(picked) if picked else None
similarity_heatmaps(similarity, grid)
if grid is None:
    st.info("Run a stitching grid for this pair (Stitching page) to compare the measures with stitching.")
if similarity is None:
    st.stop()
st.download_button("Export the matrices (JSON)", json.dumps(similarity, indent=2), "stitchlab-similarity.json",
                   "application/json")
if grid is None:
    st.stop()
st.subheader("Which measure agrees with stitching?")
agreement_section(similarity, grid)
