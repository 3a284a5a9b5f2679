"""The app's shared state: the store, the sidebar selections, the session's identity.

Every selection that defines a view is a widget bound to a URL query parameter
(``bind="query-params"``), so copying the URL reproduces the view.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass

import streamlit as st

from core import paths
from core.models import catalog, sources
from core.runs import bundled
from core.runs.store import Store, StoreError

from .text import plain

DATASETS = ["fashion-mnist", "cifar10"]
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
DEVICES = ["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Selection:
    sender: str
    receiver: str
    dataset: str
    device: str


@st.cache_resource
def _store(path: str) -> Store:
    store = Store(path)
    try:  # the first screen opens on the bundled, GPU-computed grids: stored once, found by identity
        bundled.install(store)
    except (OSError, sqlite3.Error, StoreError):  # a read-only store, or a full disk, still shows what it holds
        pass
    return store


def store() -> Store:
    """The results store; a file that is not a StitchLab store stops the page with a clear message."""
    path = str(paths.default_db())
    try:
        return _store(path)
    except StoreError as exc:
        st.error(plain(str(exc)))
        st.stop()


def run_page(page) -> None:
    """Run the page under a line on the store's state: read-only (on every page: no run can be
    saved), or a full disk or a damaged file moved aside (once per browser session). A store
    fault in the middle of the page (the disk filled up, a damaged page met) ends the page in one
    line instead of a traceback; what the page drew so far stays."""
    try:
        opened = _store(str(paths.default_db()))
    except StoreError:  # a page that reads the store says why; the others work without it
        opened = None
    notice = opened.notice if opened else None
    seen = st.session_state.setdefault("store_notices_seen", set())
    if notice and (opened.read_only or notice not in seen):
        seen.add(notice)
        st.warning(plain(notice), icon=":material/database:")
    try:
        page.run()
    except StoreError as exc:
        st.error(plain(str(exc)))


def session_id() -> str:
    """A random id per browser session: jobs are shown to the session that submitted them."""
    if "session_id" not in st.session_state:
        st.session_state.session_id = uuid.uuid4().hex[:12]
    return st.session_state.session_id


def _model_options() -> list[str]:
    """The zoo and the uploads, plus a `paper/` model (or a random control of any of these) that a
    shared URL names, checked against the manifests without loading anything. Anything else in
    the URL is refused with one message; never a path on the server, never a download."""
    names = catalog.model_names()
    for key in ("sender", "receiver"):
        value = st.query_params.get(key)
        if not value or value in names:
            continue
        try:
            uploads = [n for n in names if sources.parse(n).source == "file:"]
            model = sources.check(value, allowed_files=uploads)
            if model.source == "torchvision/":
                raise ValueError("torchvision models run from the CLI or a notebook (python -m core grid "
                                 f"{model.base} ...); the dashboard offers the zoo, paper/ models and uploads")
            names.append(value)
        except ValueError as exc:
            st.sidebar.warning(f"The link's {key} {plain(repr(value))} is not offered here: {plain(exc)}. Showing "
                               f"another model instead: pick one below, or add a checkpoint on the Models page.")
    return names


def sidebar() -> Selection:
    """Sender, receiver, dataset and device, in the sidebar and in the URL."""
    names = _model_options()
    with st.sidebar:
        st.markdown("### Networks")
        # No format_func on URL-bound widgets: the URL would hold the label instead of the name.
        sender = st.selectbox("Sender (runs up to layer i)", names, key="sender", bind="query-params",
                              index=names.index(catalog.DEFAULT_SENDER) if catalog.DEFAULT_SENDER in names else 0)
        st.caption(catalog.model_label(sender))
        receiver = st.selectbox("Receiver (runs from layer j)", names, key="receiver", bind="query-params",
                                index=names.index(catalog.DEFAULT_RECEIVER) if catalog.DEFAULT_RECEIVER in names else 0)
        st.caption(catalog.model_label(receiver))
        st.markdown("### Data and compute")
        dataset = st.selectbox("Dataset", DATASETS, key="dataset", bind="query-params",
                               help="The zoo was trained on Fashion-MNIST; CIFAR-10 needs internet once and "
                                    "CIFAR-trained networks (python -m core zoo train --preset paper).")
        device = st.selectbox("Device", DEVICES, key="device", bind="query-params",
                              help="auto: the GPU when there is one. Work runs in a background worker.")
        st.caption("The URL holds every selection: copy it to share this view.")
    return Selection(sender, receiver, dataset, device)


def dataset_mismatch(sender: str, receiver: str, dataset: str) -> str | None:
    """One line saying that the networks were trained on another dataset than ``dataset`` and
    how to fix it, or None. Checked from the models' records before any work is asked for: the
    worker would only fail later, on the first layer's channels."""
    other = {name: trained_on for name in dict.fromkeys((sender, receiver))
             if (trained_on := catalog.trained_on(name)) not in (None, dataset)}
    if not other:
        return None
    names = " and ".join(other)
    were = "were" if len(other) > 1 else "was"
    trained = " and ".join(DATASET_NAMES.get(d, d) for d in dict.fromkeys(other.values()))
    fix = next(iter(other.values()))
    return (f"{names} {were} trained on {trained}, not {DATASET_NAMES.get(dataset, dataset)}: pick {fix} as "
            f"the Dataset in the sidebar (or networks trained on {DATASET_NAMES.get(dataset, dataset)}).")
