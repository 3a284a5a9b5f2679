"""The preconditioned training of the Quick trained recipe (core.engine.precondition, issue 17)."""

import pytest
import torch
import torch.nn.functional as F

from core.engine.grid import GridConfig, run_grid
from core.engine.lstsq import NormalEquations
from core.engine.precondition import input_preconditioner, precondition_gradient_
from core.engine.stitches import make_stitch
from core.runs import recipes


@pytest.mark.parametrize(("sender", "receiver"), [((3, 8, 8), (5, 8, 8)),  # 1x1 conv
                                                  ((3, 8, 8), (5, 4, 4)),  # 2x2 conv, stride 2: patch order
                                                  ((6,), (4,))])  # linear
def test_one_preconditioned_step_on_a_squared_loss_lands_on_the_least_squares_solution(sender, receiver):
    """For 1/2 mean ||W z - y||² the preconditioned gradient times d + 1 is the Newton step: one
    step from anywhere reaches the least-squares solution, whatever the input's scale and
    correlations, for every kind of stitch (a gradient in the wrong row order would miss it)."""
    g = torch.Generator().manual_seed(0)
    stitch = make_stitch(sender, receiver, seed=1).double()
    mixing = torch.randn(sender[0], sender[0], generator=g, dtype=torch.float64) * 30  # ill-conditioned input
    x = torch.einsum("bc...,cd->bd...", torch.randn(64, *sender, generator=g, dtype=torch.float64), mixing) + 5
    y = torch.randn(64, *receiver, generator=g, dtype=torch.float64)
    rows, targets = stitch.design_rows(x), stitch.target_rows(y)
    system = NormalEquations(rows.shape[1], targets.shape[1], "cpu")
    system.add_gram(rows)
    system.add_cross(rows, targets)
    weight, bias = system.solve(ridge=0.0)

    loss = 0.5 * F.mse_loss(stitch.target_rows(stitch(x)), targets, reduction="sum") / rows.shape[0]
    loss.backward()
    precondition_gradient_(stitch, input_preconditioner(system.augmented_gram(), ridge=0.0).double())
    with torch.no_grad():
        for p in (stitch.linear.weight, stitch.linear.bias):
            p -= (rows.shape[1] + 1) * p.grad
    assert torch.allclose(stitch.row_weight().float(), weight, atol=1e-3)
    assert torch.allclose(stitch.linear.bias.float(), bias, atol=1e-3)


def test_the_preconditioner_is_normalised_and_survives_a_dead_input():
    g = torch.Generator().manual_seed(2)
    scales = torch.tensor([10.0, 1.0, 0.3, 3.0], dtype=torch.float64)
    rows = torch.randn(2000, 4, generator=g, dtype=torch.float64) * scales + 2
    z = torch.cat([rows, torch.ones(2000, 1, dtype=torch.float64)], 1).float()
    system = NormalEquations(4, 1, "cpu")
    system.add_gram(rows)
    # E[zᵀ P z] = 1: one learning rate means the same step at every layer. (The default ridge damps
    # directions of little variance, which the mean of a ReLU's output makes smaller still: 0.87 here.)
    p = input_preconditioner(system.augmented_gram(), ridge=1e-9)
    assert ((z @ p) * z).sum(1).mean() == pytest.approx(1.0, abs=1e-3)
    dead = NormalEquations(4, 1, "cpu")
    dead.add_gram(rows * torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))  # a ReLU channel never on
    assert torch.isfinite(input_preconditioner(dead.augmented_gram())).all()


def test_preconditioning_needs_least_squares_and_old_runs_keep_their_identity():
    with pytest.raises(ValueError, match="precondition needs mode lstsq\\+train"):
        GridConfig("a", "b", mode="train", precondition=True).validate()
    with pytest.raises(ValueError, match="unknown lr-schedule 'cosine'"):
        GridConfig("a", "b", lr_schedule="cosine").validate()
    plain, quick = GridConfig("zoo/resnet_1111-s0", "zoo/resnet_1111-s1"), \
        GridConfig.from_dict(recipes.grid_config("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "quick"))
    assert not {"precondition", "lr_schedule"} & set(plain.identity("cpu"))  # as stored before they existed
    assert quick.identity("cpu")["precondition"] is True and quick.identity("cpu")["lr_schedule"] == "linear"


def test_the_quick_recipe_is_the_pages_default_and_old_stored_runs_keep_their_recipe():
    assert next(iter(recipes.RECIPES)) == "quick"
    quick = recipes.grid_config("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "quick")
    assert quick["precondition"] and quick["lr_schedule"] == "linear" and quick["train_limit"] == 2000
    assert [r.key for r in recipes.recipe_of(quick)] == ["quick", "quick"]
    old = {k: v for k, v in recipes.grid_config("a", "b", "standard", "full").items()
           if k not in ("precondition", "lr_schedule")}  # a run stored before those settings existed
    assert [r.key for r in recipes.recipe_of(old)] == ["standard", "full"]
    assert recipes.made_alike(old, recipes.grid_config("c", "d", "standard", "full"))
    assert not recipes.made_alike(old, quick)


def test_a_quick_grid_trains_every_cell_with_its_preconditioner_however_it_is_chunked(monkeypatch):
    """Least squares runs in forward-only chunks of its own before training: the preconditioners
    it makes must reach the training chunks (without them the lr 0.08 steps are another recipe)."""
    from core.engine import fused

    config = recipes.grid_config("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "quick",
                                 sender_layers=["stem", "layer2.0"], receiver_layers=["stem", "layer3.0"],
                                 train_limit=256, eval_limit=200)
    seen, step = [], fused.precondition_gradient_
    monkeypatch.setattr(fused, "precondition_gradient_", lambda stitch, p: seen.append(id(stitch)) or step(stitch, p))
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "100000")
    whole = run_grid(config, device="cpu")
    assert len(set(seen)) == 4 and len(seen) == 4 * 8  # every cell, every one of 256 / 32 steps
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "60")
    seen.clear()
    chunked = run_grid(config, device="cpu")
    assert len(set(seen)) == 4 and len(seen) == 4 * 8
    for a, b in zip(whole.matrix("accuracy"), chunked.matrix("accuracy")):
        assert b == pytest.approx(a, abs=0.02)
    assert all(cell["status"] == "done" for cell in whole.cells.values())  # none diverged at lr 0.08
    assert whole.value("layer2.0", "stem") > 0.85  # least squares alone: 0.54 on these 256 images


def test_the_cli_names_it_and_runs_it_on_the_quick_budget():
    """`grid --recipe quick` (issue 17): the page's default, on its own 2,000 / 1,000 images unless
    --budget says otherwise; the other recipes keep every image."""
    import argparse

    from core.cli import grid_settings

    def settings(**given):
        args = dict(sender="zoo/resnet_1111-s0", receiver="zoo/resnet_1111-s1", sender_layers=None,
                    receiver_layers=None, mode=None, epochs=None, batch_size=None, lr=None, train_limit=None,
                    eval_limit=None, max_stitch_params=None, control="none", dataset="fashion-mnist", seed=0,
                    bn_before=False, bn_after=False, recipe=None, budget=None)
        return grid_settings(argparse.Namespace(**{**args, **given}))

    quick = settings(recipe="quick")
    assert quick["precondition"] and (quick["train_limit"], quick["eval_limit"]) == (2000, 1000)
    assert settings(recipe="quick", budget="full")["train_limit"] is None
    assert settings(recipe="standard")["train_limit"] is None
