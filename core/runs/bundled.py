"""Results that ship with StitchLab, stored as runs so that every page finds them at once.

``assets/lesson/lesson.json`` holds task-trained grids of the zoo computed once on a GPU with
the seed paper's recipe (``python -m core lesson build --device cuda``): the default pair with
its three random controls, two seeds of one network, and a least-squares grid. :func:`install`
stores each as a finished run of the store (no cells to train: its accuracies are the bundle's),
so the Stitching page opens on a finished, task-trained grid of the default pair on a laptop
without a GPU, and the Runs page lists them beside the user's own.

A bundled run says where it came from (:func:`provenance`: command, device, date, torch). Its
identity is its grid's on the device type that computed it (``cuda``): a grid run here on the
CPU has another identity, so it is stored as a run of its own beside the bundled one, never over
it. The bundle's grids carry accuracies only (no per-class details, curves or stitch weights):
the pages say so where they would show them.
"""

from __future__ import annotations

import json
from pathlib import Path

from core import paths
from core.models import sources, zoo
from core.runs import service
from core.runs.store import Store

__all__ = ["BUNDLE_FILES", "install", "provenance"]

BUNDLE_FILES = (paths.ASSETS / "lesson" / "lesson.json",)


def install(store: Store, files=BUNDLE_FILES) -> list[str]:
    """Store every bundled grid the store lacks (found by identity); returns the new run ids.

    A bundle is of the zoo that ships beside it: where the zoo in use has other weights
    (``$STITCHLAB_ZOO``, a retrained zoo), its grids are not of these models and are skipped."""
    added = []
    for path in files:
        bundle = json.loads(Path(path).read_text())
        made_with = {**bundle.get("made_with", {}), "file": str(Path(path).relative_to(paths.PROJECT_ROOT))
                     if Path(path).is_relative_to(paths.PROJECT_ROOT) else str(path)}
        device_type = "cuda" if "cuda" in made_with.get("command", "") else "cpu"
        for key, grid in bundle.get("grids", {}).items():
            if not (_of_bundled_zoo(grid["sender"]) and _of_bundled_zoo(grid["receiver"])):
                continue
            identity = service.identity("grid", _current_defaults(grid["config"]), device_type)
            run_id = _store_grid(store, identity, grid, {**made_with, "key": key})
            if run_id is not None:
                added.append(run_id)
    return added


def provenance(run: dict) -> dict | None:
    """Where a bundled run came from (command, device, date, torch, file), or None for a run
    computed here."""
    return (run.get("summary") or {}).get("bundled")


def _current_defaults(config: dict) -> dict:
    """The bundle's settings, with those its mode does not read at today's defaults: a
    task-trained grid never solves least squares, so the ``lstsq_rows`` it was built with (a
    default since changed) must not make it another grid than the page's recipe."""
    from dataclasses import asdict

    from core.engine.results import GridConfig

    if config.get("mode") == "train":
        return {**config, "lstsq_rows": asdict(GridConfig("", ""))["lstsq_rows"]}
    return config


def _of_bundled_zoo(name: str) -> bool:
    model = sources.parse(name)
    if model.source != "zoo/":
        return False
    try:
        return sources.fingerprint(name) == zoo.zoo_entry(model.key, paths.BUNDLED_ZOO)["sha256"]
    except (KeyError, ValueError, OSError):
        return False


def _store_grid(store: Store, identity: dict, grid: dict, made_with: dict) -> str | None:
    reasons = grid.get("reasons", {})
    cells = [(i, j, grid["status"][r][c], grid["accuracy"][r][c],
              {"reason": reasons[f"{i} -> {j}"]} if reasons.get(f"{i} -> {j}") else {})
             for r, i in enumerate(grid["sender_layers"])
             for c, j in enumerate(grid["receiver_layers"]) if grid["status"][r][c] != "missing"]
    summary = {k: grid.get(k) for k in ("sender_layers", "receiver_layers", "sender_shapes", "receiver_shapes",
                                        "sender_accuracy", "receiver_accuracy", "reference_accuracy")}
    return store.import_run("grid", identity, f"bundled: {made_with['key']}", cells,
                            {**summary, "bundled": made_with}, grid.get("seconds") or 0.0,
                            f"bundled with StitchLab: {made_with.get('command')} on {made_with.get('device')}")
