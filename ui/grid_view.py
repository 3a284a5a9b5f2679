"""Drawing a stored grid, picking a cell in it, and the cell's details."""

from __future__ import annotations

import streamlit as st

from core.data import classes as data_info
from core.runs import bundled, recipes, seed_check

from . import charts, presenter
from .grids import RECIPES, cell, use_recipe
from .text import plain

# px: the main area of a 1280-px-wide window in presenter mode, which hides the sidebar (measured in Chromium)
PRESENTER_PAGE_WIDTH = 1216


def plot(fig, key: str | None = None, where=None, square: bool = False, **kwargs):
    """Draw a plotly figure with the app's chart settings (PNG export button included).

    A figure with a width of its own (a layer grid: ``square`` says so too) is drawn at that width,
    so that its cells stay square; size it for its column with :func:`column_width` (a wider one
    is squeezed into the column and its cells overlap). Other figures fill the column."""
    where = where or st
    own_width = square or fig.layout.width is not None
    return where.plotly_chart(fig, key=key, config=charts.PLOTLY_CONFIG, width="content" if own_width else "stretch",
                              **kwargs)


def column_width(n_columns: int = 1) -> int:
    """The width in px of each of ``n_columns`` equal ``st.columns`` in a 1280-px-wide window, where
    presenter mode (no sidebar) leaves more room."""
    return charts.column_width(n_columns, PRESENTER_PAGE_WIDTH if presenter.active() else charts.PAGE_WIDTH)


def heatmap(grid: dict, metric: str, key: str, font_size: int = 12, selectable: bool = True,
            width: int | None = None) -> None:
    """The grid's heatmap, sized for ``width`` px (default: the page's width); a click on a cell
    selects it (``cell_i``/``cell_j`` in the URL) and outlines it at once."""
    width = width or column_width(1)
    if not selectable:
        plot(charts.grid_heatmap(grid, metric, font_size=font_size, width=width), key, square=True)
        return
    selected = _apply_click(key) or selected_cell()
    fig = charts.grid_heatmap(grid, metric, font_size=font_size, selected=selected, width=width)
    # One chart widget per selected cell: a figure that changes under the same key (the outline
    # moved) has its selection cleared by the browser, which swallowed every second click.
    plot(fig, _chart_key(key, selected), square=True, on_select="rerun", selection_mode="points")


def selected_cell() -> tuple[str, str] | None:
    """The cell in ``cell_i``/``cell_j``: the widgets' state, or on a page's first run (the
    pickers below the heatmap have not run yet) the URL's."""
    cell = tuple(st.session_state[k] if k in st.session_state else st.query_params.get(k)
                 for k in ("cell_i", "cell_j"))
    return cell if all(cell) else None


def _chart_key(key: str, selected: tuple[str, str] | None) -> str:
    return f"{key}@{'>'.join(selected) if selected else ''}"


def _apply_click(key: str) -> tuple[str, str] | None:
    """The cell a click on the chart drawn in the previous run selected, now in ``cell_i``/``cell_j``
    (read before the chart is drawn, so the outline shows it in this run); None without a click."""
    event = st.session_state.get(_chart_key(key, selected_cell()))
    points = (event or {}).get("selection", {}).get("points", [])
    clicked = tuple(points[0]["customdata"][:2]) if points and points[0].get("customdata") else None
    if clicked and clicked != selected_cell():
        st.session_state.cell_i, st.session_state.cell_j = clicked
    return clicked


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
        st.warning(f"{i} → {j}: {label}. {plain(details.get('reason', ''))}")
        return
    acc, ref = found["accuracy"], grid.get("reference_accuracy")
    a, b, c, d = st.columns(4)
    a.metric("stitched accuracy", f"{acc:.3f}")
    b.metric("penalty (receiver − stitched)", f"{ref - acc:+.3f}" if ref is not None else "–")
    c.metric("relative (stitched / receiver)", f"{acc / ref:.3f}" if ref else "–")
    d.metric("stitch", f"{details.get('kind', '?')}", f"{details.get('parameters', 0):,} parameters",
             delta_color="off")
    if "per_class" not in details:  # a bundled grid ships accuracies only
        st.caption("This grid came with StitchLab and holds accuracies only: per-class accuracy, the confusion "
                   "matrix and the training curve come with a run of your own (Run, with Device cpu).")
        return
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


def bundled_note(run: dict, recipe_label: str) -> None:
    """Where a bundled grid came from; its recipe takes hours on a CPU, so the one made for a CPU is
    offered beside it."""
    made = bundled.provenance(run)
    if made is None:
        return
    st.info(f"**{recipe_label}**, bundled with StitchLab: computed with `{made.get('command')}` on "
            f"{made.get('device')} ({str(made.get('date', ''))[:10]}, torch {made.get('torch')}). "
            "It ships accuracies only; a run of your own is stored beside it.", icon=":material/inventory_2:")
    if recipe_label != recipes.RECIPES["quick"].label:
        st.button("Switch to the Quick trained recipe to compute this grid on your CPU (about a minute a grid), "
                  "then press Run", on_click=use_recipe, args=("quick", "quick"), icon=":material/bolt:",
                  key="use_quick_recipe")


def sanity_check_note(recipe_label: str, checks: list[dict], time_hint: str = "") -> bool:
    """The sanity check beside a grid (:mod:`core.runs.seed_check`): its recipe on its images
    stitching two seeds of one network at matching layers. A pattern is only read as a finding where
    those come close to the receiver. With no stored check, the recipe's measured one in words and a
    button to run it here (``time_hint`` under it); returns whether that button was pressed."""
    if checks:
        pairs = "; ".join(f"{plain(c['sender'])} → {plain(c['receiver'])}: "
                          + " · ".join(f"{layer} {acc:.2f}" for layer, acc in c["cells"])
                          + f", receiver alone {c['receiver_accuracy']:.2f}" + (" (bundled)" if c["bundled"] else "")
                          for c in checks)
        (layer, gap), check = max(((seed_check.worst(c), c) for c in checks), key=lambda w: w[0][1])
        if gap <= seed_check.MAX_GAP:
            verdict = (f"every one is within {seed_check.MAX_GAP:.2f} of its receiver, so the check is passed: "
                       "a low cell in this grid is not the recipe under-training.")
        else:
            verdict = (f"at {layer} ({plain(check['sender'])}) it falls {gap:.2f} short, so low cells there say the "
                       f"recipe under-trains, not that the networks differ. Read this grid as what "
                       f"{recipe_label} gives, not as proof.")
        st.caption(f"**Sanity check beside it** (same recipe and training images, two seeds of one network, "
                   f"matching layers, every test image): {pairs}. A stitch should join a network to its own "
                   f"second seed at about the receiver's accuracy; {verdict}")
        return False
    recipe = RECIPES.get(recipe_label)
    measured = f" Measured for {recipe.label}: {recipe.seed_check}." if recipe and recipe.seed_check else ""
    st.caption(f"**Sanity check**: no grid of two seeds of one network with this recipe and training images is "
               f"stored here yet; until one comes close to the receiver at every layer, read this grid's "
               f"pattern as the recipe's, not as a finding.{measured}")
    pressed = st.button("Run the sanity check here (two seeds of ResNet-1111 and of ResNet-2222)",
                        icon=":material/rule:", key="run_seed_check")
    if time_hint:
        st.caption(time_hint)
    return pressed
