"""The statistics of bench/recipe_frontier.py (issue 17) on hand-made grids whose answers are
known by hand: rows are sender layers, columns receiver layers."""

import math

import pytest

from bench.recipe_frontier import (
    asymmetry_stats,
    decayed_lr,
    diagonal_gaps,
    diagonal_pairs,
    max_gap,
    prototype_optimizer,
    reproduces,
    verdict,
)


def test_square_grid_regions_and_asymmetry():
    grid = [[0.9, 0.2, 0.4],   # sender stem: upper-right 0.2, 0.4
            [0.8, 0.9, 0.3],   # lower-left 0.8; upper-right 0.3
            [0.7, 0.6, 0.9]]   # lower-left 0.7, 0.6
    stats = asymmetry_stats(grid)
    assert stats["lower_left"] == pytest.approx(0.7)
    assert stats["upper_right"] == pytest.approx(0.3)
    assert stats["diagonal"] == pytest.approx(0.9)
    assert stats["asymmetry"] == pytest.approx(0.4)
    assert not reproduces(stats)  # lower-left below 0.8
    assert reproduces(stats, min_lower_left=0.7)


def test_grids_of_different_depths_compare_by_relative_depth():
    # 2 sender layers (depths 0, 1) x 3 receiver layers (0, 0.5, 1): (0,0) and (1,2) are diagonal.
    grid = [[0.95, 0.5, 0.3],
            [0.85, 0.95, 0.9]]
    stats = asymmetry_stats(grid)
    assert stats["lower_left"] == pytest.approx(0.9)   # (1,0), (1,1)
    assert stats["upper_right"] == pytest.approx(0.4)  # (0,1), (0,2)
    assert stats["diagonal"] == pytest.approx(0.925)   # (0,0), (1,2)
    assert reproduces(stats)


def test_missing_cells_are_left_out_and_an_empty_region_has_no_asymmetry():
    stats = asymmetry_stats([[0.9, None], [0.85, 0.9]])
    assert stats["lower_left"] == pytest.approx(0.85) and stats["upper_right"] is None
    assert stats["asymmetry"] is None and not reproduces(stats)


def test_the_reverse_asymmetry_does_not_reproduce():
    # Instant's picture: high upper-right, low lower-left.
    assert not reproduces(asymmetry_stats([[0.9, 0.85], [0.2, 0.9]]))
    # a small asymmetry is not enough either, however high the lower-left
    assert not reproduces(asymmetry_stats([[0.9, 0.86], [0.9, 0.9]]))
    assert reproduces(asymmetry_stats([[0.9, 0.85], [0.9, 0.9]]))  # exactly 0.05


def test_diagonal_gap_at_matching_layers():
    layers = ["stem", "layer1.0", "layer2.0"]
    grid = [[0.92, None, None],
            [None, 0.90, None],
            [None, None, 0.94]]
    gaps = diagonal_gaps(layers, layers, grid, receiver_accuracy=0.94)
    assert gaps == pytest.approx({"stem": 0.02, "layer1.0": 0.04, "layer2.0": 0.0})
    assert max_gap(gaps) == pytest.approx(0.04)
    # --layers: a grid of some same-name cells only; the others are not failures
    assert diagonal_gaps(layers, layers, grid, 0.94, {"layer1.0"}) == pytest.approx({"layer1.0": 0.04})


def test_diagonal_gap_follows_names_not_positions_and_a_missing_cell_fails():
    gaps = diagonal_gaps(["stem", "layer1.0"], ["layer1.0", "stem", "layer1.1"], [[0.1, 0.93], [None, 0.5]], 0.95)
    assert gaps["stem"] == pytest.approx(0.02) and gaps["layer1.0"] is None
    assert math.isinf(max_gap(gaps))
    assert max_gap({}) is None


def test_verdict_needs_three_pairs_and_every_seed_diagonal_within_three_points():
    good, bad = asymmetry_stats([[0.9, 0.5], [0.9, 0.9]]), asymmetry_stats([[0.9, 0.9], [0.5, 0.9]])
    assert verdict([good, good, good, bad], [0.01, 0.03])["meets_criteria"]
    assert not verdict([good, good, bad, bad], [0.01, 0.02])["meets_criteria"]  # two pairs only
    failing_seed = verdict([good, good, good], [0.01, 0.031])
    assert failing_seed["asymmetry_reproduced"] and not failing_seed["seed_check_passed"]
    assert not failing_seed["meets_criteria"]
    assert not verdict([good, good, good], [])["meets_criteria"]  # no sanity check run: no pass
    assert not verdict([good, good, good], [None])["meets_criteria"]


def test_learning_rate_schedules_decay_to_zero_over_the_steps():
    assert [decayed_lr(1.0, "constant", k, 4) for k in range(5)] == [1.0] * 5
    assert [decayed_lr(2.0, "linear", k, 4) for k in range(5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert [decayed_lr(1.0, "cosine", k, 2) for k in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    assert decayed_lr(1.0, "linear", 9, 4) == 0.0  # past the end: never negative
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        decayed_lr(1.0, "step", 0, 4)


def test_prototype_optimizer_swaps_the_engines_sgd_and_restores_it():
    torch = pytest.importorskip("torch")
    sgd = torch.optim.SGD
    weight = torch.nn.Parameter(torch.ones(2))
    with prototype_optimizer("adam", "linear", total_steps=2):
        built = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=0.01)  # as the engine calls it
        assert isinstance(built, torch.optim.Adam)
        lrs = []
        for _ in range(2):
            weight.sum().backward()
            built.step()
            lrs.append(built.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.05])
    assert torch.optim.SGD is sgd
    with prototype_optimizer(), pytest.raises(RuntimeError):  # restored even when the grid fails
        raise RuntimeError
    assert torch.optim.SGD is sgd
    with pytest.raises(ValueError, match="unknown optimizer"), prototype_optimizer("lbfgs"):
        pass


def test_seed_pairs_are_the_same_name_layers_or_the_chosen_ones():
    assert diagonal_pairs("zoo/resnet_1111-s0", "zoo/resnet_1111-s1") == [
        [name, name] for name in ("stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0")]
    assert diagonal_pairs("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", {"layer1.0", "layer1.1", "stem"}) == [
        ["stem", "stem"], ["layer1.0", "layer1.0"]]  # layer1.1: the receiver's only
