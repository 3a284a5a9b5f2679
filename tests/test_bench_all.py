"""bench/all.py (``make bench``): the plan of what each kind of machine runs."""

from __future__ import annotations

import importlib.util

import pytest

from bench.all import plan


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_every_step_of_the_plan_is_a_benchmark_module(cuda):
    missing = [name for name, _ in plan(cuda) if importlib.util.find_spec(f"bench.{name}") is None]
    assert not missing


def test_a_cpu_runs_the_similarity_indices_the_store_check_and_the_hostile_input_probes():
    """They were left out: their numbers (BENCHMARKS.md, core/runs/store.py, README.md) came from
    running each by hand."""
    names = [name for name, _ in plan(cuda=False)]
    assert {"similarity_indices", "store_check", "adversarial_probes"} <= set(names)
