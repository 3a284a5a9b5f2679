"""How long a grid should take, for the hint under the Stitching page's Run button.

First from this store's own finished grids with the same training settings and images on the
same device type (seconds per cell: the machine's real speed, under its real load); else, on a
CPU, from the figures measured on two CPU cores, scaled to the grid's cells, epochs and images.
The scaling is linear in what each phase touches (least squares and scoring in images, training
in images x epochs): rough, and the hint says which source it used.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from core.models import catalog
from core.runs.store import Store

__all__ = ["Estimate", "estimate", "cells_of", "similarity_estimate"]

# Measured on the zoo's default pair (5 x 9 = 45 cells), 2 CPU cores, Quick budget (2,000
# training / 1,000 test images), 2026-11-23, `python -m bench.recipes --device cpu`: Instant 15.2 s,
# Standard 65.0 s; split by phase with the measured shares of core.engine.grid (least squares
# 55 % / scoring 45 % of Instant; least squares 15 %, one epoch 72 %, scoring 13 % of Standard).
_CELLS, _TRAIN, _TEST = 45, 2000, 1000
_LSTSQ_S = 0.55 * 15.2  # the least-squares pass over the training images
_SCORE_S = 0.45 * 15.2  # scoring every stitch on the test images
_EPOCH_S = 0.72 * 65.0  # one epoch of task-loss training
# What "every image" means: Fashion-MNIST's split (CIFAR-10 has 50,000 training images: a sixth less).
_TRAIN_IMAGES = {"fashion-mnist": 60_000, "cifar10": 50_000}
_TEST_IMAGES = 10_000
_SAME = ("mode", "epochs", "batch_size", "train_limit", "eval_limit", "dataset", "lstsq_rows")


@dataclass(frozen=True)
class Estimate:
    seconds: float
    source: str  # what it is based on, in words


def cells_of(config: dict) -> int:
    """The number of cells a grid's settings ask for (layer lists from the catalog, no torch)."""
    if config.get("pairs"):
        return len(config["pairs"])
    senders = config.get("sender_layers") or catalog.layers_of(config["sender"])
    receivers = config.get("receiver_layers") or catalog.layers_of(config["receiver"])
    return len(senders) * len(receivers)


def estimate(store: Store, config: dict, device_type: str, grids: int = 1) -> Estimate | None:
    """Seconds for ``grids`` grids of ``config`` (a grid and its controls: one job) on
    ``device_type`` (``cpu`` or ``cuda``); None where nothing measured applies (a GPU this store
    has not run a grid of these settings on)."""
    cells = cells_of(config) * grids
    per_cell = _from_history(store, config, device_type)
    if per_cell is not None:
        return Estimate(per_cell[0] * cells, f"from {per_cell[1]} earlier grid(s) of these settings here")
    if device_type != "cpu":
        return None
    return Estimate(_cpu_reference(config) * cells, "measured on 2 CPU cores, scaled to this grid")


def _from_history(store: Store, config: dict, device_type: str) -> tuple[float, int] | None:
    rates = []
    for run in store.list_runs(kind="grid", limit=200):
        c, summary = run["config"], run.get("summary") or {}
        if run["status"] != "done" or summary.get("bundled") or c.get("device_type") != device_type \
                or any(c.get(k) != config.get(k) for k in _SAME) or not run.get("seconds"):
            continue
        n = len(summary.get("sender_layers") or []) * len(summary.get("receiver_layers") or [])
        if n:  # grids run together (a grid and its controls) share one pass and its seconds
            rates.append(run["seconds"] / summary.get("grids_in_job", 1) / n)
        if len(rates) == 5:
            break
    return (statistics.median(rates), len(rates)) if rates else None


def _cpu_reference(config: dict) -> float:
    """Seconds per cell on 2 CPU cores, from the measured Quick-budget figures."""
    train = (config.get("train_limit") or _TRAIN_IMAGES.get(config.get("dataset"), 60_000)) / _TRAIN
    test = (config.get("eval_limit") or _TEST_IMAGES) / _TEST
    mode = config.get("mode", "train")
    seconds = _SCORE_S * test
    if mode in ("lstsq", "lstsq+train"):
        seconds += _LSTSQ_S * train
    if mode in ("train", "lstsq+train"):
        seconds += _EPOCH_S * train * float(config.get("epochs", 1.0))
    return seconds / _CELLS


# --- similarity indices (the Similarity page's hint under Compute) ---------------------------------
# Seconds each index took on the default pair (5 x 9 = 45 layer pairs), 2,000 test images, 2 CPU
# cores, 2026-12-01, `python -m bench.similarity_indices` (BENCHMARKS.md, "Similarity indices").
_INDEX_S = {"linear-cka": 5.1, "rbf-cka": 6.0, "svcca": 18.4, "pwcca": 19.3, "procrustes": 42.5, "rsa": 26.5,
            "linear-encoding": 38.6}
_INDEX_PAIRS, _INDEX_IMAGES = 45, 2000
# Every index works on n x n matrices (Grams, RDMs, an n-column factor): from 1,000 to 2,000 images
# the indices took 2x (PWCCA) to 4x (linear CKA, SVCCA, encoding) as long on 2 cores (2026-12-01,
# `python -m bench.similarity_indices --images 1000`), so the square: the cautious end.
_IMAGES_EXPONENT = 2.0


def similarity_estimate(store: Store, measure: str, images: int, layer_pairs: int) -> Estimate | None:
    """Seconds for index ``measure`` on ``images`` test images and ``layer_pairs`` layer pairs (the
    index alone, not the pass over the images): scaled from the newest run of it stored here, else
    from the figures measured on 2 CPU cores; None for an index neither knows."""
    stored = _similarity_history(store, measure)
    if stored is not None:
        seconds, n, pairs = stored
        source = f"scaled from a run of {n:,} images here"
    elif measure in _INDEX_S:
        seconds, n, pairs = _INDEX_S[measure], _INDEX_IMAGES, _INDEX_PAIRS
        source = "scaled from figures measured on 2 CPU cores"
    else:
        return None
    return Estimate(seconds * layer_pairs / pairs * (images / n) ** _IMAGES_EXPONENT, source)


def _similarity_history(store: Store, measure: str) -> tuple[float, int, int] | None:
    """(seconds, images, layer pairs) of the newest finished run of ``measure`` stored here."""
    for run in store.list_runs(kind="similarity", limit=200):
        if run["status"] != "done" or measure not in run["config"].get("measures", []):
            continue
        result = store.get_artifact(run["id"], "result") or {}
        timing = (result.get("measures") or {}).get(measure, {})
        pairs = len(result.get("layers_a") or []) * len(result.get("layers_b") or [])
        if timing.get("seconds") and result.get("n_examples") and pairs:
            return timing["seconds"], result["n_examples"], pairs
    return None
