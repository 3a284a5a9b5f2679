import math

import pytest
import torch

from core.engine import grid as grid_module
from core.engine.grid import GridConfig, load_grid, run_grid, run_grids
from core.errors import Cancelled
from core.models.network import cached_model

PAIR = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1"}


def _snapshot(net):
    return {k: v.clone() for k, v in net.module.state_dict(keep_vars=False).items()}


def test_sender_and_receiver_stay_bit_identical_through_training():
    sender, receiver = cached_model(PAIR["sender"], "cpu"), cached_model(PAIR["receiver"], "cpu")
    before = (_snapshot(sender), _snapshot(receiver))
    run_grid({**PAIR, "sender_layers": ["stem", "layer2.0"], "receiver_layers": ["layer1.0", "layer3.0"],
              "mode": "lstsq+train", "train_limit": 512, "eval_limit": 200, "batch_size": 128}, device="cpu")
    run_grid({**PAIR, "sender_layers": ["layer1.0"], "receiver_layers": ["layer2.0"], "bn_before": True,
              "bn_after": True, "train_limit": 512, "eval_limit": 200, "batch_size": 128}, device="cpu")
    for net, snapshot in zip((sender, receiver), before):
        assert not net.module.training
        after = net.module.state_dict()
        assert after.keys() == snapshot.keys()
        for key, value in snapshot.items():  # parameters and buffers (BatchNorm statistics too)
            assert torch.equal(after[key], value), key


def test_a_trained_stitch_between_two_seeds_nearly_matches_the_receiver():
    # Least squares gives the task-loss training a good start (Csiszárik et al. 2021), which is
    # what makes a 24-step CPU budget enough; from a random start the paper trains 3-4 epochs.
    result = run_grid({**PAIR, "sender_layers": ["layer3.0"], "receiver_layers": ["layer3.0"], "epochs": 1,
                       "mode": "lstsq+train", "train_limit": 6000, "eval_limit": 2000}, device="cpu")
    stitched = result.value("layer3.0", "layer3.0")
    assert result.receiver_accuracy > 0.9
    assert stitched >= result.receiver_accuracy - 0.04, (stitched, result.receiver_accuracy)
    assert math.isclose(result.value("layer3.0", "layer3.0", "penalty"), result.receiver_accuracy - stitched)
    assert math.isclose(result.value("layer3.0", "layer3.0", "relative"), stitched / result.receiver_accuracy)
    details = result.cells[("layer3.0", "layer3.0")]["details"]
    assert len(details["per_class"]) == 10 and sum(map(sum, details["confusion"])) == 2000
    assert details["curve"] and details["curve"][-1][0] == math.ceil(6000 / 256)


def test_least_squares_grid_covers_every_pair():
    result = run_grid({**PAIR, "mode": "lstsq", "train_limit": 1000, "eval_limit": 500}, device="cpu")
    matrix = result.matrix()
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    assert all(0.0 <= v <= 1.0 for row in matrix for v in row)
    diagonal = [matrix[k][k] for k in range(5)]
    assert min(diagonal) > 0.7  # two seeds of one architecture: same-layer stitches work


def test_not_stitchable_is_null_not_zero():
    result = run_grid({**PAIR, "sender_layers": ["stem", "layer4.0"], "receiver_layers": ["stem"],
                       "mode": "lstsq", "train_limit": 300, "eval_limit": 200, "max_stitch_params": 2000},
                      device="cpu")
    assert result.value("layer4.0", "stem") is None and result.cells[("layer4.0", "stem")]["status"] == "not_stitchable"
    assert result.value("stem", "stem") is not None
    assert "over the limit" in result.to_json()["reasons"]["layer4.0 -> stem"]


def test_random_controls_use_other_weights():
    base = {**PAIR, "sender_layers": ["layer2.0"], "receiver_layers": ["layer2.0"], "mode": "lstsq",
            "train_limit": 500, "eval_limit": 300}
    real = run_grid(base, device="cpu")
    both = run_grid({**base, "control": "random-both"}, device="cpu")
    assert both.sender_accuracy < 0.3 and both.receiver_accuracy < 0.3
    assert both.reference_accuracy == real.receiver_accuracy  # penalties stay against the trained receiver


def test_a_network_is_scored_once_per_test_set(monkeypatch):
    calls = []
    evaluate = grid_module.evaluate_network
    monkeypatch.setattr(grid_module, "evaluate_network", lambda *a, **k: calls.append(a[1]) or evaluate(*a, **k))
    base = {**PAIR, "sender_layers": ["layer2.0"], "receiver_layers": ["layer2.0"], "mode": "lstsq",
            "train_limit": 300, "eval_limit": 257}  # a test set no other test scores
    first = run_grid(base, device="cpu")
    assert len(calls) == 2  # sender and receiver (the receiver is its own reference)
    again = run_grid({**base, "receiver_layers": ["layer3.0"]}, device="cpu")
    assert len(calls) == 2 and (again.sender_accuracy, again.receiver_accuracy) == (
        first.sender_accuracy, first.receiver_accuracy)
    other = run_grid({**base, "eval_limit": 259}, device="cpu")  # another test set is scored anew
    assert len(calls) == 4 and all(len(data) == 259 for data in calls[2:])
    assert other.sender_accuracy != first.sender_accuracy or other.receiver_accuracy != first.receiver_accuracy


def test_store_reuses_and_resumes(store):
    config = {**PAIR, "sender_layers": ["stem", "layer1.0"], "receiver_layers": ["layer1.0", "layer2.0"],
              "mode": "lstsq", "train_limit": 400, "eval_limit": 200}
    first = run_grid(config, store=store, device="cpu")
    again = run_grid(config, store=store, device="cpu")
    assert again.reused and again.matrix() == first.matrix() and again.run_id == first.run_id
    # Lose two cells as a crash would, then resume: only they are recomputed, to the same values.
    with store.transaction() as conn:
        conn.execute("DELETE FROM cells WHERE run_id = ? AND receiver_layer = 'layer2.0'", (first.run_id,))
        conn.execute("UPDATE runs SET status = 'running' WHERE id = ?", (first.run_id,))
    resumed = run_grid(config, store=store, device="cpu")
    assert not resumed.reused and resumed.matrix() == first.matrix()
    assert load_grid(store, first.run_id).matrix() == first.matrix()


def test_progress_and_cancel(store, monkeypatch):
    events, steps = [], []
    config = {**PAIR, "sender_layers": ["stem"], "receiver_layers": ["layer1.0", "layer3.0"], "train_limit": 2000,
              "eval_limit": 200, "batch_size": 64}
    step = grid_module.FusedStitches._train_step
    monkeypatch.setattr(grid_module.FusedStitches, "_train_step", lambda *a, **k: (steps.append(1), step(*a, **k))[1])

    def cancel():  # pressed during the third training step
        return len(steps) >= 3

    with pytest.raises(Cancelled):
        run_grid(config, store=store, device="cpu", progress=events.append, cancel=cancel)
    assert len(steps) == 3  # no step started after the flag: the latency is the step in flight
    assert store.list_runs()[0]["status"] == "cancelled"
    events.clear()
    monkeypatch.setattr(grid_module.FusedStitches, "_train_step", step)
    result = run_grid(config, store=store, device="cpu", progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    assert fractions == sorted(fractions)
    assert any(e.eta is not None for e in events) and result.status == "done"


def test_a_diverging_cell_fails_alone(monkeypatch):
    make = grid_module.make_stitch

    def poisoned(sender_shape, receiver_shape, *args, **kwargs):
        s = make(sender_shape, receiver_shape, *args, **kwargs)
        if tuple(sender_shape) == (128, 4, 4):  # layer4.0 -> ...: NaN weights, NaN loss
            with torch.no_grad():
                s.linear.weight.fill_(float("nan"))
        return s

    config = {**PAIR, "sender_layers": ["layer3.0", "layer4.0"], "receiver_layers": ["layer4.0"],
              "train_limit": 2048, "eval_limit": 300}
    alone = run_grid({**config, "sender_layers": ["layer3.0"]}, device="cpu").value("layer3.0", "layer4.0")
    monkeypatch.setattr(grid_module, "make_stitch", poisoned)
    result = run_grid(config, device="cpu")
    assert result.cells[("layer4.0", "layer4.0")]["status"] == "failed"
    assert "diverged" in result.cells[("layer4.0", "layer4.0")]["details"]["reason"]
    # The healthy cell trained as if it had been alone.
    assert result.cells[("layer3.0", "layer4.0")]["status"] == "done"
    assert abs(result.value("layer3.0", "layer4.0") - alone) <= 0.01


def test_bad_configurations_say_what_to_do():
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        run_grid({**PAIR, "mode": "fast"})
    with pytest.raises(ValueError, match="unknown control"):
        run_grid({**PAIR, "control": "random"})
    with pytest.raises(ValueError, match="unknown grid settings"):
        GridConfig.from_dict({**PAIR, "epoch": 3})
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        run_grid({**PAIR, "sender_layers": ["layer9"]}, device="cpu")
    with pytest.raises(ValueError, match="each pair is \\[sender layer, receiver layer\\]"):
        run_grid({**PAIR, "pairs": [["stem", "stem", "stem"]]}, device="cpu")
    with pytest.raises(ValueError, match="predicts 1000 classes"):
        run_grid({"sender": PAIR["sender"], "receiver": "torchvision/resnet18@random", "mode": "lstsq"}, device="cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run_grid(PAIR, device="cuda") if not torch.cuda.is_available() else (_ for _ in ()).throw(
            ValueError("no CUDA GPU (skipped: a GPU is present)"))


def test_controls_share_one_pass_and_equal_separate_runs(store):
    base = {**PAIR, "sender_layers": ["layer2.0", "layer4.0"], "receiver_layers": ["layer1.0", "layer3.0"],
            "mode": "lstsq+train", "train_limit": 512, "eval_limit": 200, "batch_size": 128}
    configs = [{**base, "control": c} for c in ("none", "random-sender", "random-receiver", "random-both")]
    together = run_grids(configs, store=store, device="cpu")
    assert len({r.run_id for r in together}) == 4  # each grid is its own run
    for config, shared in zip(configs, together):
        alone = run_grid(config, device="cpu")
        for row_shared, row_alone in zip(shared.matrix(), alone.matrix()):
            assert all(abs(a - b) <= 0.01 for a, b in zip(row_shared, row_alone)), config["control"]
    assert together[3].sender_accuracy < 0.3 and together[3].reference_accuracy > 0.9


def test_least_squares_cells_do_not_depend_on_how_the_grid_is_chunked(monkeypatch):
    # Positions are subsampled (more rows than lstsq_rows); the subset must depend on the batch
    # alone, not on which other cells share the chunk, or an out-of-memory retry with smaller
    # chunks would give other numbers.
    config = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "mode": "lstsq",
              "sender_layers": ["stem", "layer2.0"], "receiver_layers": ["stem", "layer1.0", "layer3.0"],
              "train_limit": 128, "eval_limit": 100, "lstsq_rows": 512}
    whole = run_grid(config, device="cpu").matrix("accuracy")
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "1")  # one cell per chunk
    assert run_grid(config, device="cpu").matrix("accuracy") == whole


def test_lstsq_then_train_fits_in_forward_only_chunks(monkeypatch):
    # Training needs a chunk per cell under this budget; least squares, which runs no backward,
    # fits every cell in one pass over the data first. Same numbers as one chunk for everything.
    from core.engine.fused import FusedStitches

    config = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "mode": "lstsq+train",
              "sender_layers": ["stem", "layer2.0"], "receiver_layers": ["stem", "layer1.0", "layer3.0"],
              "train_limit": 256, "eval_limit": 200, "batch_size": 64}
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "100000")
    whole = run_grid(config, device="cpu").matrix("accuracy")
    fits, fit = [], FusedStitches.fit_lstsq
    monkeypatch.setattr(FusedStitches, "fit_lstsq",
                        lambda self, *a, **k: fits.append(len(self.cells)) or fit(self, *a, **k))
    monkeypatch.setattr(grid_module, "_plan_chunks", _spy(grid_module._plan_chunks, plans := []))
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "60")
    chunked = run_grid(config, device="cpu").matrix("accuracy")
    assert len(plans[0]) >= 3 and fits == [6]  # several training chunks, one least-squares pass
    for row_whole, row_chunked in zip(whole, chunked):
        assert row_chunked == pytest.approx(row_whole, abs=0.02)


def _spy(function, calls: list):
    def spied(*args, **kwargs):
        calls.append(function(*args, **kwargs))
        return calls[-1]
    return spied


def test_a_class_without_test_images_has_no_accuracy_rather_than_zero():
    config = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "mode": "lstsq",
              "pairs": [["layer4.0", "layer4.0"]], "train_limit": 128, "eval_limit": 5}
    result = run_grid(config, device="cpu")
    details = result.cells[("layer4.0", "layer4.0")]["details"]
    present = {k for k, row in enumerate(details["confusion"]) if sum(row) > 0}
    assert 0 < len(present) < 10
    assert all((value is None) == (k not in present) for k, value in enumerate(details["per_class"]))


def test_each_cells_confusion_is_its_own_stitched_networks(store):
    # The fused pass scores all cells of a receiver layer in one batch and counts them in one
    # table; each cell's rows must be its own network's predictions, not a neighbour's.
    from core.data.datasets import load_dataset
    from core.engine.stitched import load_stitched

    config = {**PAIR, "sender_layers": ["stem", "layer2.0", "layer4.0"], "receiver_layers": ["layer1.0", "layer3.0"],
              "mode": "lstsq", "train_limit": 300, "eval_limit": 300}
    result = run_grid(config, store=store, device="cpu")
    test = load_dataset("fashion-mnist", "test", 300)
    images, labels = test.images.float() / 255, test.labels
    accuracies = set()
    for (i, j), cell in result.cells.items():
        net = load_stitched(store, result.run_id, i, j)
        with torch.no_grad():
            predictions = net(images).argmax(-1)
        alone = torch.zeros(10, 10, dtype=torch.long)
        alone.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
        fused = torch.tensor(cell["details"]["confusion"])
        assert (fused - alone).abs().sum() <= 2, (i, j)  # float rounding may flip a near tie
        accuracies.add(round(cell["accuracy"], 2))
    assert len(accuracies) > 3  # the cells differ, so a table given to the wrong cell would show


def test_engine_options_are_typed_and_an_unknown_one_is_refused():
    from core.engine.options import EngineOptions

    config = {**PAIR, "sender_layers": ["stem"], "receiver_layers": ["stem"], "mode": "lstsq", "train_limit": 256,
              "eval_limit": 100}
    with pytest.raises(ValueError, match=r"unknown engine options \['autotuen'\]"):
        run_grid(config, device="cpu", engine={"autotuen": True})
    plain = run_grid(config, device="cpu", engine=EngineOptions(fold_bn=False, fuse_relu=False))
    assert plain.matrix() == run_grid(config, device="cpu", engine={"fold_bn": False, "fuse_relu": False}).matrix()
