"""How far a similarity index agrees with stitching across a grid's cells: the arithmetic behind
the Similarity page's comparison, headless and torch-free.

The cells compared are those (sender layer i, receiver layer j) present in both the index's
matrix and the stitching grid with a stitched accuracy; cells not stitchable, failed or not
computed yet are left out. Per index:

* **Spearman's ρ** between the index and stitched accuracy: the Pearson correlation of their
  ranks, tied values sharing their average rank (as ``scipy.stats.spearmanr``). Undefined (None)
  below 3 cells or when either side is constant.
* **Concordance**: of the pairs of cells that both order strictly, the fraction the index orders
  as stitching does, concordant / (concordant + discordant) = (1 + Goodman-Kruskal γ) / 2. Pairs
  tied on either side are left out, and counted. Ties are exact equality of the stored values:
  stitched accuracies on 1,000 test images come in steps of 0.001, so tied pairs are common.

A distance (``higher_is_similar`` False, e.g. Procrustes) is negated first, so that for every
index ρ = +1 and concordance 1.0 mean "more similar exactly where stitching works better".

The cells of one grid share layers, so they are not independent samples: no p-value is given
here; the numbers of cells and of pairs are what a figure rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.engine.results import relative_depth

__all__ = ["Concordance", "cell_points", "compare", "concordance", "disagreements", "oriented", "ranks",
           "spearman"]


def ranks(values: list[float]) -> list[float]:
    """1-based ranks; tied values share the average of the ranks they span: ``[3, 1, 3] -> [2.5, 1, 2.5]``."""
    order = sorted(range(len(values)), key=lambda k: values[k])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for k in order[start:stop + 1]:
            out[k] = (start + stop) / 2 + 1
        start = stop + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's ρ of paired values; None below 3 pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"Spearman's rho pairs values: got {len(x)} and {len(y)}")
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


@dataclass(frozen=True)
class Concordance:
    """Pairs of cells by how two measures order them."""

    concordant: int
    discordant: int
    tied: int  # tied on either side (or both): left out of the fraction

    @property
    def pairs(self) -> int:
        return self.concordant + self.discordant + self.tied

    @property
    def fraction(self) -> float | None:
        """concordant / (concordant + discordant); None when no pair is strictly ordered by both."""
        ordered = self.concordant + self.discordant
        return self.concordant / ordered if ordered else None


def concordance(x: list[float], y: list[float]) -> Concordance:
    """How many pairs ``x`` and ``y`` order the same way, the other way, or not at all (a tie)."""
    if len(x) != len(y):
        raise ValueError(f"concordance pairs values: got {len(x)} and {len(y)}")
    concordant = discordant = tied = 0
    for a in range(len(x)):
        for b in range(a + 1, len(x)):
            sign = (x[a] - x[b]) * (y[a] - y[b])
            if sign > 0:
                concordant += 1
            elif sign < 0:
                discordant += 1
            else:
                tied += 1
    return Concordance(concordant, discordant, tied)


def oriented(value: float, higher_is_similar: bool) -> float:
    """The value with "higher = more similar" for every index: a distance is negated."""
    return value if higher_is_similar else -value


def cell_points(matrix: list[list[float]], layers_a: list[str], layers_b: list[str], grid: dict) -> list[dict]:
    """The cells of ``grid`` (``GridResult.to_json()``) with a stitched accuracy and a value in
    ``matrix`` (rows ``layers_a``, columns ``layers_b``): ``{"cell", "sender_layer",
    "receiver_layer", "value", "accuracy", "depth_gap"}``, in the grid's order; ``depth_gap`` is
    the sender's relative depth minus the receiver's (> 0: a later layer into an earlier one)."""
    row = {name: k for k, name in enumerate(layers_a)}
    col = {name: k for k, name in enumerate(layers_b)}
    senders, receivers = grid["sender_layers"], grid["receiver_layers"]
    statuses = grid.get("status")
    points = []
    for a, i in enumerate(senders):
        for b, j in enumerate(receivers):
            accuracy = grid["accuracy"][a][b]
            if accuracy is None or (statuses and statuses[a][b] != "done") or i not in row or j not in col:
                continue
            value = matrix[row[i]][col[j]]
            if value is None:
                continue
            points.append({"cell": f"{i} → {j}", "sender_layer": i, "receiver_layer": j, "value": value,
                           "accuracy": accuracy,
                           "depth_gap": relative_depth(a, len(senders)) - relative_depth(b, len(receivers))})
    return points


def compare(result: dict, grid: dict) -> list[dict]:
    """Every index of ``result`` (``SimilarityResult.to_json()``) against stitched accuracy in
    ``grid``, best first (by ρ; then by concordance; undefined last), one dict per index::

        {"measure", "label", "higher_is_similar", "rho", "concordance", "concordant", "discordant",
         "tied_pairs", "cells", "pairs", "rank_rho", "rank_concordance"}

    ``pairs`` is every pair of ``cells``; ``rank_*`` rank the indices by each number (1 = agrees
    most; equal numbers share the better rank; None where the number is undefined)."""
    rows = []
    for name, measure in result["measures"].items():
        points = cell_points(measure["matrix"], result["layers_a"], result["layers_b"], grid)
        x = [oriented(p["value"], measure["higher_is_similar"]) for p in points]
        y = [p["accuracy"] for p in points]
        pairs = concordance(x, y)
        rows.append({"measure": name, "label": measure["label"], "higher_is_similar": measure["higher_is_similar"],
                     "rho": spearman(x, y), "concordance": pairs.fraction, "concordant": pairs.concordant,
                     "discordant": pairs.discordant, "tied_pairs": pairs.tied, "cells": len(points),
                     "pairs": pairs.pairs})
    for key in ("rho", "concordance"):
        for row in rows:
            better = [r for r in rows if r[key] is not None and row[key] is not None and r[key] > row[key]]
            row[f"rank_{key}"] = None if row[key] is None else len(better) + 1
    undefined = float("-inf")
    rows.sort(key=lambda r: (r["rho"] if r["rho"] is not None else undefined,
                             r["concordance"] if r["concordance"] is not None else undefined), reverse=True)
    return rows


def disagreements(points: list[dict], higher_is_similar: bool = True, n: int = 5) -> list[dict]:
    """The ``n`` cells an index and stitching rank most differently: each side's percentile rank
    (rank / cells, ties averaged; a distance negated), the gap between them largest first::

        {"cell", "value", "accuracy", "gap", "reading"}

    ``gap`` > 0: the cell stitches better than its similarity ranks it ("stitches well, less
    similar"); < 0: the other way ("more similar, stitches poorly")."""
    if not points:
        return []
    similar = ranks([oriented(p["value"], higher_is_similar) for p in points])
    usable = ranks([p["accuracy"] for p in points])
    rows = [{"cell": p["cell"], "value": p["value"], "accuracy": p["accuracy"],
             "gap": (u - s) / len(points)} for p, s, u in zip(points, similar, usable)]
    rows.sort(key=lambda r: abs(r["gap"]), reverse=True)
    for row in rows:
        row["reading"] = ("stitches well, less similar" if row["gap"] > 0 else
                          "more similar, stitches poorly" if row["gap"] < 0 else "ranked alike")
    return rows[:n]
