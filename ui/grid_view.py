"""Drawing a stored grid, picking a cell in it, and the cell's details."""

from __future__ import annotations

import streamlit as st

from core.data import classes as data_info

from . import charts
from .grids import cell


def plot(fig, key: str | None = None, where=None, square: bool = False, **kwargs):
    """Draw a plotly figure with the app's chart settings (PNG export button included).

    ``square``: a layer grid at its own width, so its cells stay square (in a narrow column the
    figure is scaled down to fit)."""
    where = where or st
    return where.plotly_chart(fig, key=key, config=charts.PLOTLY_CONFIG, width="content" if square else "stretch",
                              **kwargs)


def heatmap(grid: dict, metric: str, key: str, font_size: int = 12, selectable: bool = True) -> None:
    """The grid's heatmap; a click on a cell selects it (``cell_i``/``cell_j`` in the URL)."""
    selected = (st.session_state.get("cell_i"), st.session_state.get("cell_j"))
    fig = charts.grid_heatmap(grid, metric, font_size=font_size,
                              selected=selected if all(selected) and selectable else None)
    if not selectable:
        plot(fig, key, square=True)
        return
    event = plot(fig, key, square=True, on_select="rerun", selection_mode="points")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points and points[0].get("customdata"):
        clicked = tuple(points[0]["customdata"][:2])
        if st.session_state.get(f"_{key}_applied") != clicked:  # apply each click once
            st.session_state[f"_{key}_applied"] = clicked
            st.session_state.cell_i, st.session_state.cell_j = clicked


def cell_picker(pairs: list[tuple[str, str]],
                placeholder: str | None = "click a cell, or pick") -> tuple[str, str] | None:
    """Two selectboxes (``cell_i``/``cell_j`` in the URL; clicking the heatmap sets them) choosing
    one of ``pairs``; the receiver layers offered are those paired with the chosen sender layer.
    Without ``placeholder`` the first pair is preselected."""
    senders = list(dict.fromkeys(i for i, _ in pairs))
    if st.session_state.get("cell_i") not in senders:
        st.session_state.pop("cell_i", None)
    left, right = st.columns(2)
    i = left.selectbox("Sender layer i", senders, key="cell_i", bind="query-params",
                       index=None if placeholder else 0, placeholder=placeholder or "")
    receivers = [j for s, j in pairs if s == i] if i else list(dict.fromkeys(j for _, j in pairs))
    if st.session_state.get("cell_j") not in receivers:
        st.session_state.pop("cell_j", None)
    j = right.selectbox("Receiver layer j", receivers, key="cell_j", bind="query-params",
                        index=None if placeholder else 0, placeholder=placeholder or "")
    return (i, j) if i and j and (i, j) in pairs else None


def cell_details(grid: dict, i: str, j: str, stitch_cka=None) -> None:
    """Per-class accuracy, confusion matrix, training curve, CKA and a link to attributions."""
    found = cell(grid["run_id"], i, j)
    if found is None:
        st.info(f"{i} → {j} has not been computed in this run yet.")
        return
    details = found["details"]
    if found["status"] != "done":
        label = "not stitchable" if found["status"] == "not_stitchable" else "failed"
        st.warning(f"{i} → {j}: {label}. {details.get('reason', '')}")
        return
    acc, ref = found["accuracy"], grid.get("reference_accuracy")
    a, b, c, d = st.columns(4)
    a.metric("stitched accuracy", f"{acc:.3f}")
    b.metric("penalty (receiver − stitched)", f"{ref - acc:+.3f}" if ref is not None else "–")
    c.metric("relative (stitched / receiver)", f"{acc / ref:.3f}" if ref else "–")
    d.metric("stitch", f"{details.get('kind', '?')}", f"{details.get('parameters', 0):,} parameters",
             delta_color="off")
    classes = data_info.classes(grid.get("dataset", "fashion-mnist"), len(details.get("per_class", [])))
    left, right = st.columns(2)
    plot(charts.per_class_figure(details["per_class"], classes), f"pc_{i}_{j}", left)
    plot(charts.confusion_figure(details["confusion"], classes), f"cm_{i}_{j}", right)
    left, right = st.columns(2)
    if details.get("curve"):
        plot(charts.curve_figure(details["curve"]), f"cv_{i}_{j}", left)
    else:
        left.caption("Least-squares stitch: solved in closed form, no training curve.")
    with right:
        st.markdown("**Does the stitch reproduce what the receiver expects?**")
        st.caption("Linear CKA between the stitch's output and the receiver's own activation at layer j, "
                   "on 1,000 test images. High: the stitch imitates the receiver. Low with high accuracy: "
                   "it found something else that works (the seed paper's warning).")
        if stitch_cka is not None:
            stitch_cka(grid, i, j)
        st.page_link("pages/attributions.py", label="See what this stitched network looks at →",
                     icon=":material/visibility:",
                     query_params={"sender": grid["sender"], "receiver": grid["receiver"], "run": grid["run_id"],
                                   "cell_i": i, "cell_j": j})
