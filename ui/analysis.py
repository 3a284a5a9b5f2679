"""Analyses beside a grid: CKA of one stitch (a stored run, computed by the worker), and how
CKA and stitching agree across a grid (a few lines of arithmetic on stored results)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import runs
from core.engine.results import relative_depth
from core.runs.analysis import stitch_cka_config

from .state import store


def stitch_cka_panel(grid: dict, i: str, j: str) -> None:
    """The CKA between the stitch's output and what the receiver expects: shown when stored,
    else a button that queues it (a few seconds in the worker)."""
    from . import jobs

    config = stitch_cka_config(grid["run_id"], i, j, grid.get("dataset", "fashion-mnist"))
    found = runs.find(store(), "stitch-cka", config)
    if found is not None:
        value = runs.load(store(), found["id"])["cka"]
        st.metric("CKA(stitch output, receiver's activation at j)", f"{value:.3f}")
        return
    if st.button("Compute this CKA (a few seconds)", key=f"stitch_cka_{grid['run_id']}_{i}_{j}"):
        jobs.submit("stitch-cka", [config], st.session_state.selection.device)


def agreement(cka: dict, grid: dict) -> tuple[list[dict], float | None]:
    """Cells present in both a CKA matrix and a stitching grid: points and Spearman's rank correlation."""
    s_index = {name: k for k, name in enumerate(cka["layers_a"])}
    r_index = {name: k for k, name in enumerate(cka["layers_b"])}
    n_s, n_r = len(grid["sender_layers"]), len(grid["receiver_layers"])
    points = []
    for a, i in enumerate(grid["sender_layers"]):
        for b, j in enumerate(grid["receiver_layers"]):
            accuracy = grid["accuracy"][a][b]
            if accuracy is None or i not in s_index or j not in r_index:
                continue
            points.append({"cell": f"{i} → {j}", "cka": cka["cka"][s_index[i]][r_index[j]], "accuracy": accuracy,
                           "depth_gap": relative_depth(a, n_s) - relative_depth(b, n_r)})
    if len(points) < 3:
        return points, None
    import pandas as pd  # only when there is something to compare (it costs the first paint 0.3 s)

    frame = pd.DataFrame(points)
    ranks = frame[["cka", "accuracy"]].rank()  # Spearman = Pearson correlation of the ranks
    rho = float(np.corrcoef(ranks["cka"], ranks["accuracy"])[0, 1])
    return points, rho


def disagreements(points: list[dict], n: int = 5):
    """The cells where the two measures rank most differently (a DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame(points)
    if frame.empty:
        return frame
    frame["gap"] = frame["accuracy"].rank(pct=True) - frame["cka"].rank(pct=True)
    frame = frame.reindex(frame["gap"].abs().sort_values(ascending=False).index).head(n)
    frame["reading"] = np.where(frame["gap"] > 0, "stitches well, low CKA", "high CKA, stitches poorly")
    return frame[["cell", "cka", "accuracy", "reading"]]
