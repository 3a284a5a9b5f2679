"""Attributions: what the sender, the receiver and the stitched network look at in one image."""

import numpy as np
import streamlit as st

from core.attribution.maps import METHOD_LABELS
from core.data.classes import classes
from ui import attributions as attr
from ui import jobs, navigation, presenter
from ui.gallery import gallery
from ui.grid_view import cell_picker
from ui.state import dataset_mismatch, store

navigation.through_app()

IMAGE_SHAPES = {"fashion-mnist": (1, 32, 32), "cifar10": (3, 32, 32)}

sel = st.session_state.selection
st.title("Attributions")
st.caption("Which pixels drive each network's answer? Same image, same target class, three networks: the sender, "
           "the receiver, and the stitched network (sender up to layer i → stitch → receiver from layer j).")

mismatch = dataset_mismatch(sel.sender, sel.receiver, sel.dataset)
if mismatch:
    st.error(mismatch)
    st.stop()

runs = attr.stitched_grids(sel.sender, sel.receiver)
run_labels = {r["id"]: attr.run_label(r) for r in runs}
run_id = st.selectbox("Stitched network from the grid", list(run_labels), format_func=run_labels.get,
                      index=attr.preselected(runs, st.query_params.get("run")), key="attr_run") if runs else None
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
        failure = attr.scoring_failure(request)
        jobs.show_errors()
        if failure:
            st.error(f"The receiver could not be scored on the test set: {failure}")
        else:
            st.info("Scoring the receiver on the test set, once (it is stored for every later visit), so that "
                    "its images can be browsed by class and by the receiver's answer…")
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
    thumbnails = st.container()  # above the slider, drawn after it: a link's position is read by the slider
    # The slider (in the URL) holds the choice; a slider needs two ends: a single match is simply shown.
    # No default value: a thumbnail's click sets it (a default beside that makes Streamlit warn).
    position = 0 if len(pool) == 1 else st.slider("Position among the matching images", 0, len(pool) - 1,
                                                  key="attr_pos", bind="query-params")
    images = attr.gallery_images(sel.dataset)
    if images is not None and not presenter.active():  # thumbnails are controls: a slide shows the figure
        with thumbnails:
            gallery(pool, images, position, "attr_pos", label=lambda k: f"#{k}",
                    describe=lambda k: f"{names[labels[k]]}; the receiver says {names[predictions[k]]}")
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
    if sel.dataset in attr.LIGHT_ON_BLACK:
        st.caption(attr.POLARITY_NOTE)
        warning = st.empty()  # above the checkbox, about what the checkbox decides
        invert = st.checkbox("Invert the picture", key="attr_invert")
        if invert:
            pixels = attr.inverted(pixels)
        if reason := attr.looks_inverted(pixels):
            warning.warning(f"As the networks will see it, this picture looks dark on light ({reason}): "
                            f"{'untick' if invert else 'tick'} **Invert the picture**.")

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
shown = f"test-image-{index}" if index is not None else "upload"
# Drawn when clicked, not on every rerun (0.1 s on two cores), from the stored result: its own figure.
st.download_button("Download the figure (PNG)", lambda: attr.figure_png(attr.figure(result, sel.dataset)),
                   file_name=f"attributions-{method}-{shown}.png", mime="image/png", on_click="ignore", key="attr_png")
st.caption("Red: pixels that raise the target class's score; blue: lower it (Saliency and Grad-CAM show magnitude "
           "only). Each map is scaled to its own 99th percentile.")
