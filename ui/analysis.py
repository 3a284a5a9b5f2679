"""Analyses beside a grid: CKA of one stitch (a stored run, computed by the worker), and how
similarity indices and stitching agree across a grid (the arithmetic is
:mod:`core.similarity.agreement`; here it becomes tables)."""

from __future__ import annotations

import streamlit as st

from core import runs
from core.runs.analysis import stitch_cka_config
from core.runs.similarity_runs import merge_results
from core.similarity.agreement import cell_points, compare, spearman
from core.similarity.agreement import disagreements as similarity_disagreements
from core.similarity.catalogue import check_feature_budget, measure_catalogue

from . import charts, grid_view
from .state import store
from .text import duration


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
    """Cells present in both a CKA matrix (``CkaResult.to_json()``) and a stitching grid: points
    (``{"cell", "cka", "accuracy", "depth_gap"}``) and Spearman's rank correlation (None below 3
    cells or when either side is constant; see :mod:`core.similarity.agreement`)."""
    points = [{**p, "cka": p["value"]} for p in cell_points(cka["cka"], cka["layers_a"], cka["layers_b"], grid)]
    return points, spearman([p["cka"] for p in points], [p["accuracy"] for p in points])


def measure_points(similarity: dict, name: str, grid: dict) -> list[dict]:
    """The cells of ``grid`` with index ``name``'s value (``"value"``) and stitched accuracy."""
    measure = similarity["measures"][name]
    return cell_points(measure["matrix"], similarity["layers_a"], similarity["layers_b"], grid)


def direction_words(higher_is_similar: bool) -> str:
    return "similarity (higher = more alike)" if higher_is_similar else "distance (lower = more alike; sign flipped)"


def ranking(similarity: dict, grid: dict):
    """The indices ranked by how well they agree with stitching (a DataFrame, best first)."""
    import pandas as pd

    rows = compare(similarity, grid)
    return pd.DataFrame([{
        "rank by ρ": r["rank_rho"], "measure": r["label"],
        "kind": "similarity" if r["higher_is_similar"] else "distance (flipped)", "Spearman ρ": r["rho"],
        "rank by pairs": r["rank_concordance"], "pairs as stitching": r["concordance"], "concordant": r["concordant"],
        "discordant": r["discordant"], "tied": r["tied_pairs"], "cells": r["cells"]} for r in rows])


def disagreements(points: list[dict], n: int = 5, value: str = "cka", label: str = "CKA",
                  higher_is_similar: bool = True):
    """The cells where an index and stitching rank most differently (a DataFrame): ``points``
    carry the index under ``value`` (:func:`agreement`: ``"cka"``; :func:`measure_points`: ``"value"``)."""
    import pandas as pd

    rows = similarity_disagreements([{**p, "value": p[value]} for p in points], higher_is_similar, n)
    return pd.DataFrame([{"cell": r["cell"], label: r["value"], "accuracy": r["accuracy"], "reading": r["reading"]}
                         for r in rows],
                        columns=["cell", label, "accuracy", "reading"])


def stored_similarity(configs: list[dict]) -> tuple[dict | None, list[dict]]:
    """The stored results of ``configs`` (:func:`core.runs.similarity_runs.similarity_configs`) as
    one result, its measures in the order of ``configs`` (None when none is stored), and the
    configurations not stored yet."""
    found = [(config, runs.find(store(), "similarity", config)) for config in configs]
    stored = [runs.load(store(), run["id"]) for _, run in found if run is not None]
    order = [name for config in configs for name in config["measures"]]
    return (merge_results(stored, order) if stored else None), [c for c, run in found if run is None]


def over_budget(model_a: str, model_b: str, images: int) -> str | None:
    """Why ``images`` images of the two models' default layers cannot be compared (their features
    would not fit :data:`core.similarity.catalogue.FEATURE_BUDGET`), or None when they can."""
    from core.models import catalog

    shapes_a = catalog.layers_of(model_a)
    # One network on both sides computes each layer once (see core.similarity.networks.model_similarity).
    shapes_b = [] if model_a == model_b else catalog.layers_of(model_b)
    try:
        check_feature_budget(images, [shape for _, shape in shapes_a], [shape for _, shape in shapes_b])
    except ValueError as exc:
        return str(exc)
    return None


def similarity_time_hint(configs: list[dict]) -> str:
    """How long computing these similarity runs (one index each) should take on this machine: each
    index scaled to its images and layer pairs (:func:`core.runs.estimates.similarity_estimate`)."""
    from core.models import catalog
    from core.runs.estimates import similarity_estimate

    parts, total, sources = [], 0.0, set()
    for config in configs:
        (name,) = config["measures"]
        pairs = (len(config["layers_a"] or catalog.layers_of(config["model_a"]))
                 * len(config["layers_b"] or catalog.layers_of(config["model_b"])))
        found = similarity_estimate(store(), name, config["limit"] or 10_000, pairs)
        if found is None:
            return "No time measured for these indices here yet: seconds to minutes."
        total += found.seconds
        sources.add(found.source)
        parts.append(f"{measure_catalogue()[name]['label']} {duration(found.seconds)}")
    return (f"{duration(total)} on this CPU, besides one pass over the images ({'; '.join(parts)}; "
            f"{', '.join(sorted(sources))}, as the square of the images).")


def similarity_heatmaps(similarity: dict | None, grid: dict | None) -> None:
    """The stitching grid and every stored index's heatmap (each when there is one) on the same
    axes, two to a row (each readable in half a 1280-px window)."""
    width = grid_view.column_width(2)
    measures = list(similarity["measures"]) if similarity else []
    panels = ([None] if grid is not None else []) + measures  # None: the grid
    for row in range(0, len(panels), 2):
        for column, name in zip(st.columns(2), panels[row:row + 2]):
            with column:
                if name is None:
                    grid_view.heatmap(grid, "accuracy", key="cka_page_grid", selectable=False, width=width)
                else:
                    grid_view.plot(charts.measure_heatmap(similarity, name, width=width), f"sim_{name}", square=True)
    if not measures:
        return
    seconds = " · ".join(f"{m['label']} {m['seconds']:.1f} s" for m in similarity["measures"].values())
    st.caption(f"{similarity['n_examples']:,} test images of {similarity['dataset']}; each measure took: {seconds}")


def agreement_section(similarity: dict, grid: dict) -> None:
    """How each index agrees with stitching: the ranking, then each index's scatter and the cells
    where they disagree most, one tab per index."""
    table = ranking(similarity, grid)
    cells = int(table["cells"].max()) if len(table) else 0
    st.caption(f"Over the {cells} cells that both the grid and the measures cover ({cells * (cells - 1) // 2} pairs "
               "of cells; cells not stitchable are left out). **ρ**: Spearman rank correlation with stitched "
               "accuracy. **Pairs as stitching**: the fraction of pairs of cells the measure orders as stitching "
               "does, concordant / (concordant + discordant); **tied** pairs (equal on either side) are left out. A "
               "distance's sign is flipped, so +1 and 1.0 mean full agreement under every measure. Cells share "
               "layers, so they are not independent samples: these numbers describe this grid; they are not tests.")
    st.dataframe(table, hide_index=True, column_config={
        "Spearman ρ": st.column_config.NumberColumn(format="%+.2f"),
        "pairs as stitching": st.column_config.NumberColumn(format="%.2f")})
    st.markdown("**Where each measure and stitching disagree most** (by rank):")
    measures = similarity["measures"]
    for tab, (name, measure) in zip(st.tabs([m["label"] for m in measures.values()]), measures.items()):
        points = measure_points(similarity, name, grid)
        tab.caption(f"{measure['label']}: {measure['summary']}; a {direction_words(measure['higher_is_similar'])}.")
        grid_view.plot(charts.agreement_scatter(points, "value", measure["label"], measure["higher_is_similar"]),
                       f"sim_scatter_{name}", tab)
        tab.dataframe(disagreements(points, value="value", label=measure["label"],
                                    higher_is_similar=measure["higher_is_similar"]), hide_index=True,
                      column_config={column: st.column_config.NumberColumn(format="%.3f")
                                     for column in (measure["label"], "accuracy")})


def offered_measures() -> dict[str, dict]:
    """The registry's measures (:func:`core.similarity.catalogue.measure_catalogue`); where they
    cannot be listed, one error line, and the page stops."""
    try:
        return measure_catalogue()
    except RuntimeError as exc:
        st.error(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
        st.stop()
