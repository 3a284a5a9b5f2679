"""The sanity check that goes beside a grid (Bansal et al. 2021): its recipe, on its images, stitching
two seeds of one zoo network at matching layers. A stitch that cannot join a network to its own
second seed at about the receiver's accuracy says nothing about two different networks: low cells
may be the recipe under-training. The check is two small grids (the diagonals of R1111-s0 -> -s1 and
R2222-s0 -> -s1, 14 cells), stored as runs like any other; bundled ones count too. They train as the
grid does (recipe and training images) and are scored on every test image: one cell's gap on 1,000
test images has a standard error of about 0.008, a quarter of the 0.03 it is held to.
"""

from __future__ import annotations

from core.models import catalog, sources
from core.runs import recipes
from core.runs.store import Store

__all__ = ["SEED_PAIRS", "MAX_GAP", "check_configs", "find", "worst"]

# Two seeds of one network, of the zoo's narrowest and deepest ResNets (what bench.recipe_frontier checks).
SEED_PAIRS = (("zoo/resnet_1111-s0", "zoo/resnet_1111-s1"), ("zoo/resnet_2222-s0", "zoo/resnet_2222-s1"))
MAX_GAP = 0.03  # "close to the receiver": within 3 accuracy points at every layer (issue 17)
_ZOO_DATASET = "fashion-mnist"  # what the zoo was trained on: the check means nothing on other images
_TRAINED_ALIKE = recipes.RECIPE_SETTINGS + ("train_limit",)


def check_configs(config: dict) -> list[dict]:
    """The grids of the check for a grid made with ``config`` (same recipe and training images, every
    test image): one per seed pair, its same-name layers only. Empty on a dataset the zoo was not
    trained on."""
    if config.get("dataset", _ZOO_DATASET) != _ZOO_DATASET:
        return []
    out = []
    for sender, receiver in SEED_PAIRS:
        layers = [name for name, _ in catalog.layers_of(sender)]
        out.append({**config, "sender": sender, "receiver": receiver, "control": "none", "sender_layers": None,
                    "receiver_layers": None, "pairs": [[name, name] for name in layers], "eval_limit": None})
    return out


def find(store: Store, config: dict) -> list[dict]:
    """The stored check of ``config``'s recipe and training images (scored on any number of test
    images; the most first), one entry per seed pair that has one:
    ``{"sender", "receiver", "receiver_accuracy", "cells": [(layer, accuracy), ...], "bundled"}``, a
    bundled grid before one computed here. Only finished grids with every same-name layer count."""
    found: dict[tuple[str, str], dict] = {}
    def preference(run: dict) -> tuple:  # bundled first, then the check scored on the most test images
        limit = run["config"].get("eval_limit")
        return not (run.get("summary") or {}).get("bundled"), 0 if limit is None else -limit

    runs = sorted(store.list_runs(kind="grid"), key=preference)
    for run in runs:
        c = run["config"]
        pair = (c.get("sender"), c.get("receiver"))
        if pair in found or run["status"] != "done" or c.get("control", "none") != "none" \
                or c.get("dataset") != _ZOO_DATASET or not recipes.made_alike(c, config, _TRAINED_ALIKE) \
                or not _two_seeds(*pair):
            continue
        cells = {(x["sender_layer"], x["receiver_layer"]): x["accuracy"] for x in store.cells(run["id"], False)}
        layers = [name for name, _ in catalog.layers_of(pair[0])]
        summary = run.get("summary") or {}
        if any(cells.get((name, name)) is None for name in layers) or summary.get("reference_accuracy") is None:
            continue
        found[pair] = {"sender": pair[0], "receiver": pair[1], "receiver_accuracy": summary["reference_accuracy"],
                       "cells": [(name, cells[(name, name)]) for name in layers], "run_id": run["id"],
                       "bundled": bool(summary.get("bundled"))}
    return [found[p] for p in SEED_PAIRS if p in found] + [v for p, v in found.items() if p not in SEED_PAIRS]


def _two_seeds(sender: str | None, receiver: str | None) -> bool:
    """Whether two zoo names are two seeds of one network (``resnet_1111-s0``, ``resnet_1111-s1``)."""
    if not sender or not receiver:
        return False
    a, b = sources.parse(sender), sources.parse(receiver)
    return a.source == b.source == "zoo/" and a.base != b.base and \
        a.base.rsplit("-s", 1)[0] == b.base.rsplit("-s", 1)[0]


def worst(check: dict) -> tuple[str, float]:
    """The layer whose stitch falls furthest short of the receiver, and by how much."""
    layer, accuracy = min(check["cells"], key=lambda c: c[1])
    return layer, check["receiver_accuracy"] - accuracy
