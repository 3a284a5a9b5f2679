"""Attributions: what the sender, the receiver and the stitched network look at in one image."""

import numpy as np
import streamlit as st

from core.attribution.maps import METHOD_LABELS
from core.data.classes import classes
from ui import attributions as attr
from ui import jobs
from ui.grid_view import cell_picker
from ui.grids import grids_of_pair
from ui.state import store

IMAGE_SHAPES = {"fashion-mnist": (1, 32, 32), "cifar10": (3, 32, 32)}

sel = st.session_state.selection
st.title("Attributions")
st.caption("Which pixels drive each network's answer? Same image, same target class, three networks: the sender, "
           "the receiver, and the stitched network (sender up to layer i → stitch → receiver from layer j).")

runs = grids_of_pair(sel.sender, sel.receiver, statuses=("done", "cancelled"))
run_ids = [r["id"] for r in runs]
wanted = st.query_params.get("run")
run_id = st.selectbox("Stitched network from run", run_ids, index=run_ids.index(wanted) if wanted in run_ids else 0,
                      format_func=lambda r: f"{r} · {next(x for x in runs if x['id'] == r)['config']['mode']}",
                      placeholder="no grid stored for this pair", key="attr_run") if runs else None
cell = None
if run_id:
    done = [(c["sender_layer"], c["receiver_layer"]) for c in store().cells(run_id, with_details=False)
            if c["status"] == "done"]
    cell = cell_picker(done, placeholder=None)
else:
    st.info("No stitching grid stored for this pair: only sender and receiver are shown. Run one on the "
            "Stitching page to add the stitched network.")

names = classes(sel.dataset, 10)
source = st.radio("Image", ["test set", "upload"], key="attr_source", bind="query-params", horizontal=True)
index, pixels = None, None
if source == "test set":
    request, scored = attr.predictions(sel.receiver, sel.dataset)
    if scored is None:
        # The networks a page offers are small (zoo, paper/, uploads): seconds in the worker, once.
        jobs.request("predictions", request, sel.device)
        jobs.progress_panel()
        jobs.show_errors()
        st.info("Scoring the receiver on the test set, once (it is stored for every later visit), so that its "
                "images can be browsed by class and by the receiver's answer…")
        if st.button("Score again"):
            jobs.submit("predictions", [request], sel.device)
        st.stop()
    labels, predictions = np.asarray(scored["labels"]), np.asarray(scored["predictions"])
    left, right = st.columns(2)
    label = left.selectbox("Class", ["any"] + list(names), key="attr_class", bind="query-params")
    which = right.radio("Receiver's answer", ["all", "correct", "wrong"], key="attr_which", bind="query-params",
                        horizontal=True)
    pool = attr.browse(labels, predictions, None if label == "any" else names.index(label), which)
    if len(pool) == 0:
        st.info("No test image matches: widen the filter.")
        st.stop()
    position = st.slider("Image", 0, len(pool) - 1, 0, key="attr_pos", bind="query-params")
    index = int(pool[position])
    st.caption(f"test image #{index}: {names[labels[index]]}; the receiver says {names[predictions[index]]}")
else:
    file = st.file_uploader("A picture (PNG or JPEG); it is resized to the dataset's size", type=["png", "jpg", "jpeg"],
                            key="attr_upload")
    if file is None:
        st.stop()
    try:
        pixels = attr.uploaded_pixels(file.getvalue(), IMAGE_SHAPES.get(sel.dataset, (3, 32, 32)))
    except ValueError as exc:
        st.error(str(exc))
        st.stop()

method = st.selectbox("Method", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key="attr_method",
                      bind="query-params")
use_true = st.checkbox("Explain the true class (else: the receiver's answer)", key="attr_true", bind="query-params",
                       disabled=source == "upload")
try:
    request = attr.attribution_request(sel.sender, sel.receiver, sel.dataset, method, index, pixels, run_id, cell,
                                       use_true)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
result = attr.stored("attributions", request)
if result is None:
    jobs.request("attributions", request, sel.device)  # seconds; queued once, de-duplicated, cancellable
jobs.progress_panel()
jobs.show_errors()
if result is None:
    st.info("Computing the attributions in the background (a few seconds)…")
    if st.button("Compute again"):
        jobs.submit("attributions", [request], sel.device)
    st.stop()
st.pyplot(attr.figure(result, sel.dataset))
st.caption("Red: pixels that raise the target class's score; blue: lower it (Saliency and Grad-CAM show magnitude "
           "only). Each map is scaled to its own 99th percentile.")
