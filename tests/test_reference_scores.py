"""A network's own accuracy is scored once per test set for good: stored, and read back by a
later worker (a fresh process) instead of being scored again."""

from __future__ import annotations

import pytest

from core.engine import grid as grid_engine
from core.engine.grid import run_grid
from core.models import network
from core.runs import reference_scores
from core.runs.recipes import grid_config
from core.runs.store import Store


def _count_scoring(monkeypatch) -> list:
    calls = []
    real = grid_engine.evaluate_network

    def counting(net, *args, **kwargs):
        calls.append(net.name)
        return real(net, *args, **kwargs)

    monkeypatch.setattr(grid_engine, "evaluate_network", counting)
    return calls


def test_a_later_worker_reads_the_stored_scores_instead_of_scoring_again(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.sqlite3")
    config = grid_config("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", "instant", "quick",
                         sender_layers=["stem"], receiver_layers=["stem"], control="random-sender")
    network._cached_model.cache_clear()  # networks loaded by earlier tests keep their scores in memory
    calls = _count_scoring(monkeypatch)
    first = run_grid(config, store=store, device="cpu")
    assert len(calls) == 2  # the random sender and the receiver
    network._cached_model.cache_clear()  # what a new worker process starts with
    calls.clear()
    again = run_grid(config, store=store, device="cpu", reuse=False)
    assert calls == []
    assert (again.sender_accuracy, again.reference_accuracy) == (first.sender_accuracy, first.reference_accuracy)


@pytest.mark.parametrize("name, dataset", [("zoo/resnet_1111-s0", "folder:/tmp/images"),
                                           ("torchvision/resnet18", "fashion-mnist")])
def test_scores_that_could_go_stale_are_never_stored(name, dataset):
    assert reference_scores.key_of(name, dataset, None, "cpu", (True, True)) is None
