"""Attributions: what the sender, the receiver and the stitched network look at in one image."""

import streamlit as st

from core.attribution import METHOD_LABELS
from core.data_info import classes
from ui import attributions as attr
from ui.grid_view import cell_picker
from ui.grids import grids_of_pair
from ui.state import store

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
index, upload = None, None
if source == "test set":
    labels, predictions = attr.test_labels_and_predictions(sel.receiver, sel.dataset)
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
    upload = file.getvalue()

method = st.selectbox("Method", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key="attr_method",
                      bind="query-params")
use_true = st.checkbox("Explain the true class (else: the receiver's answer)", key="attr_true", bind="query-params",
                       disabled=source == "upload")
try:
    image, results, true_label = attr.attributions(sel.sender, sel.receiver, run_id, cell, sel.dataset, index,
                                                   upload, method, use_true)
except (ValueError, KeyError) as exc:
    st.error(f"{exc}")
    st.stop()
st.pyplot(attr.figure(image, results, sel.dataset, true_label))
st.caption("Red: pixels that raise the target class's score; blue: lower it (Saliency and Grad-CAM show magnitude "
           "only). Each map is scaled to its own 99th percentile.")
