"""Two stitching grids of the same layers, subtracted: where does grid A stitch better than B?

Typical pairs: the real networks minus a random control (what the networks contribute beyond
the stitch's own capacity), or one recipe minus another on the same networks. Grids come in as
``GridResult.to_json()`` dicts; a dict and a plotly figure go out. No Streamlit, no torch.
"""

from __future__ import annotations

import plotly.graph_objects as go

from . import charts

__all__ = ["comparable", "difference", "difference_figure"]


def comparable(run: dict, others: list[dict]) -> list[dict]:
    """The stored grid runs among ``others`` whose sender and receiver layer lists are ``run``'s
    (``run`` itself left out): the grids it can be subtracted from, cell by cell."""
    layers = _layers(run)
    if not all(layers):  # not started yet: its layers are not known
        return []
    return [r for r in others if r["id"] != run["id"] and _layers(r) == layers]


def difference(a: dict, b: dict) -> dict:
    """Grid A's stitched accuracy minus grid B's, cell by cell, for two grids of the same layers.

    Returns ``{"sender_layers", "receiver_layers", "accuracy", "status", "mean", "cells"}``:
    ``accuracy[r][c]`` is A − B where both cells are done (else None, and ``status`` says why:
    ``failed`` or ``not_stitchable`` if either is, else ``missing``); ``mean`` is the mean
    difference over the ``cells`` that both grids have (None if none). ``ValueError`` (one line)
    for grids of other layers."""
    for axis in ("sender", "receiver"):
        if a[f"{axis}_layers"] != b[f"{axis}_layers"]:
            raise ValueError(f"grid B's {axis} layers ({', '.join(b[f'{axis}_layers'])}) are not grid A's "
                             f"({', '.join(a[f'{axis}_layers'])}): compare two grids of the same layers")
    values, statuses, done = [], [], []
    for r in range(len(a["sender_layers"])):
        values.append([])
        statuses.append([])
        for c in range(len(a["receiver_layers"])):
            status = _both(a, b, r, c)
            value = a["accuracy"][r][c] - b["accuracy"][r][c] if status == "done" else None
            values[r].append(value)
            statuses[r].append(status)
            if value is not None:
                done.append(value)
    return {"sender_layers": list(a["sender_layers"]), "receiver_layers": list(a["receiver_layers"]),
            "accuracy": values, "status": statuses, "mean": sum(done) / len(done) if done else None,
            "cells": len(done)}


def difference_figure(diff: dict, width: int = charts.PAGE_WIDTH, font_size: int = 12) -> go.Figure:
    """The difference heatmap: red where A stitches better, blue where B does, white at 0 (a
    diverging scale centred on zero), ``width`` px wide."""
    return charts.layer_grid(diff["accuracy"], diff["sender_layers"], diff["receiver_layers"], diff["status"],
                             title="A − B: stitched accuracy", row_title="sender · layer i",
                             col_title="receiver · layer j", colorbar="accuracy difference (A − B)",
                             scale="RdBu_r", hover_name="A − B", font_size=font_size, width=width)


def _layers(run: dict) -> tuple:
    summary = run.get("summary") or {}
    return tuple(summary.get("sender_layers") or ()), tuple(summary.get("receiver_layers") or ())


def _both(a: dict, b: dict, r: int, c: int) -> str:
    states = {_status(a, r, c), _status(b, r, c)}
    if states == {"done"}:
        return "done"
    return next((s for s in ("failed", "not_stitchable") if s in states), "missing")


def _status(grid: dict, r: int, c: int) -> str:
    statuses = grid.get("status")
    status = statuses[r][c] if statuses else "done"  # without statuses, a value is a done cell
    return status if status != "done" or grid["accuracy"][r][c] is not None else "missing"
