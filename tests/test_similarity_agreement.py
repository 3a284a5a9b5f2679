"""How a similarity index agrees with stitching: Spearman's rho, concordant pairs, ties, a distance
flipped, and the disagreement table, on examples small enough to check by hand."""

from __future__ import annotations

import math

import pytest

from core.similarity.agreement import (
    Concordance,
    cell_points,
    compare,
    concordance,
    disagreements,
    ranks,
    spearman,
)


def test_tied_values_share_their_average_rank():
    assert ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
    assert ranks([0.5, 0.5, 0.5, 0.1]) == [3.0, 3.0, 3.0, 1.0]
    assert ranks([]) == []


def test_spearman_by_hand():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # Ties: x ranks 1, 2.5, 2.5, 4 and y ranks 1, 3, 2, 4 (means 2.5): sum dx dy = 4.5, sum dx^2 = 4.5,
    # sum dy^2 = 5, so rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # d = rank differences 0, 2, -1, -1 (n = 4, no ties): 1 - 6 * 6 / (4 * 15) = 0.4
    assert spearman([1, 2, 3, 4], [1, 4, 2, 3]) == pytest.approx(0.4)


def test_spearman_is_undefined_below_three_cells_or_for_a_constant_side():
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # never NaN
    with pytest.raises(ValueError, match="got 3 and 2"):
        spearman([1, 2, 3], [1, 2])


def test_concordant_and_discordant_pairs_by_hand():
    # (0,1): both up; (0,2): x up, y down; (1,2): x up, y down
    assert concordance([1, 2, 3], [2, 3, 1]) == Concordance(concordant=1, discordant=2, tied=0)
    assert concordance([1, 2, 3], [2, 3, 1]).fraction == pytest.approx(1 / 3)
    # pair (1, 2) is tied in x: left out of the fraction, counted
    pairs = concordance([1, 2, 2, 3], [1, 3, 2, 4])
    assert pairs == Concordance(concordant=5, discordant=0, tied=1)
    assert pairs.pairs == 6 and pairs.fraction == 1.0
    # tied in y only, and in both: also left out
    assert concordance([1, 2, 3], [5, 5, 5]) == Concordance(0, 0, 3)
    assert concordance([1, 2, 3], [5, 5, 5]).fraction is None


def _grid(accuracy, senders=("s0", "s1"), receivers=("r0", "r1"), status=None) -> dict:
    return {"sender_layers": list(senders), "receiver_layers": list(receivers), "accuracy": accuracy,
            **({"status": status} if status else {})}


def _result(**measures) -> dict:
    """A similarity result over s0, s1 x r0, r1; ``measures``: name -> (matrix, higher_is_similar)."""
    return {"layers_a": ["s0", "s1"], "layers_b": ["r0", "r1"], "measures": {
        name: {"label": name.upper(), "higher_is_similar": higher, "summary": "", "matrix": matrix}
        for name, (matrix, higher) in measures.items()}}


def test_cells_not_stitchable_failed_or_absent_from_the_matrix_are_left_out():
    grid = _grid([[0.9, None], [0.5, 0.7]], receivers=("r0", "r1"),
                 status=[["done", "not_stitchable"], ["done", "failed"]])
    points = cell_points([[0.1, 0.2], [0.3, 0.4]], ["s0", "s1"], ["r0", "r1"], grid)
    assert [(p["cell"], p["value"], p["accuracy"]) for p in points] == [("s0 → r0", 0.1, 0.9), ("s1 → r0", 0.3, 0.5)]
    # a grid layer the matrix lacks
    points = cell_points([[0.1], [0.3]], ["s0", "s1"], ["r0"], _grid([[0.9, 0.8], [0.5, 0.7]]))
    assert [p["cell"] for p in points] == ["s0 → r0", "s1 → r0"]
    assert points[1]["depth_gap"] == 1.0  # the last sender layer into the first receiver layer


def test_a_distance_is_sign_flipped_so_that_agreement_reads_the_same():
    accuracy = [[0.9, 0.6], [0.7, 0.4]]  # order: s0r0 > s1r0 > s0r1 > s1r1
    similar = [[0.8, 0.3], [0.5, 0.1]]  # the same order: full agreement
    distance = [[0.2, 0.7], [0.5, 0.9]]  # 1 - similar: a distance in full agreement
    rows = compare(_result(sim=(similar, True), dist=(distance, False)), _grid(accuracy))
    by_name = {r["measure"]: r for r in rows}
    for name in ("sim", "dist"):
        assert by_name[name]["rho"] == pytest.approx(1.0)
        assert by_name[name]["concordance"] == 1.0
        assert (by_name[name]["concordant"], by_name[name]["discordant"], by_name[name]["pairs"]) == (6, 0, 6)
        assert by_name[name]["cells"] == 4 and by_name[name]["rank_rho"] == 1  # equal numbers share a rank
    # Read as a similarity, the same distance would disagree completely.
    (wrong,) = compare(_result(dist=(distance, True)), _grid(accuracy))
    assert wrong["rho"] == pytest.approx(-1.0) and wrong["concordance"] == 0.0


def test_measures_are_ranked_by_rho_with_ties_and_undefined_last():
    accuracy = [[0.9, 0.6], [0.7, 0.4]]
    rows = compare(_result(flat=([[0.5, 0.5], [0.5, 0.5]], True), good=([[0.8, 0.3], [0.5, 0.1]], True),
                           half=([[0.8, 0.5], [0.3, 0.1]], True)), _grid(accuracy))
    assert [r["measure"] for r in rows] == ["good", "half", "flat"]
    half = rows[1]
    # half orders s0r0 > s0r1 > s1r0 > s1r1: only the pair (s1r0, s0r1) the other way round
    assert (half["concordant"], half["discordant"], half["tied_pairs"]) == (5, 1, 0)
    assert half["concordance"] == pytest.approx(5 / 6) and half["rho"] == pytest.approx(0.8)
    assert (half["rank_rho"], half["rank_concordance"]) == (2, 2)
    flat = rows[2]
    assert flat["rho"] is None and flat["concordance"] is None and flat["rank_rho"] is None
    assert (flat["tied_pairs"], flat["pairs"]) == (6, 6)


def test_disagreements_by_hand():
    points = [{"cell": "a", "value": 0.9, "accuracy": 0.1}, {"cell": "b", "value": 0.5, "accuracy": 0.5},
              {"cell": "c", "value": 0.1, "accuracy": 0.9}]
    rows = disagreements(points, n=2)
    # percentile ranks: a is 3/3 similar and 1/3 usable (gap -2/3), c the other way (+2/3), b 0
    assert [(r["cell"], round(r["gap"], 6)) for r in rows] == [("a", round(-2 / 3, 6)), ("c", round(2 / 3, 6))]
    assert [r["reading"] for r in rows] == ["more similar, stitches poorly", "stitches well, less similar"]
    # the same values as a distance: the index now agrees with stitching everywhere
    assert {round(r["gap"], 9) for r in disagreements(points, higher_is_similar=False)} == {0.0}
    assert disagreements([]) == []


def test_the_cka_agreement_of_a_constant_matrix_is_undefined_not_nan():
    """A constant similarity matrix (e.g. every CKA rounded to 1) gave rho = NaN (shown '+nan');
    it is undefined: None."""
    from ui.analysis import agreement

    cka = {"layers_a": ["s0", "s1"], "layers_b": ["r0", "r1"], "cka": [[1.0, 1.0], [1.0, 1.0]]}
    points, rho = agreement(cka, _grid([[0.9, 0.6], [0.7, 0.4]]))
    assert len(points) == 4 and rho is None
    # and otherwise the same number as before (pandas' average ranks, Pearson)
    cka["cka"] = [[0.8, 0.5], [0.3, 0.1]]
    assert agreement(cka, _grid([[0.9, 0.6], [0.7, 0.4]]))[1] == pytest.approx(0.8)
