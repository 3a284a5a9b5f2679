"""Results stored by the code before the runs service (commit 803aafe) are still found, and the
engine computes the same numbers now. ``tests/data/make-reference-803aafe.py`` made the store and
the attribution maps, run with that commit's code on this project's CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import runs
from core.engine.grid import run_grid
from core.engine.results import GridConfig, load_grid
from core.runs.store import Store

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "reference-803aafe.json").read_text())


@pytest.fixture(scope="module")
def old_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("old") / "store.sqlite3"
    shutil.copy(DATA / "store-803aafe.sqlite3", path)
    return Store(path)


def _settings(run: dict) -> dict:
    return {k: v for k, v in run["config"].items() if k in GridConfig.__dataclass_fields__}


@pytest.mark.parametrize("key", ["grid_lstsq", "grid_trained"])
def test_old_grids_are_found_and_recomputed_alike(old_store, key):
    run = old_store.get_run(REFERENCE[key])
    settings = _settings(run)
    assert runs.find(old_store, "grid", settings, "cpu")["id"] == run["id"]  # same identity, same hash
    assert runs.submit(old_store, "grid", [settings], "cpu").job_id is None  # nothing to queue
    stored = load_grid(old_store, run["id"])
    again = run_grid(settings, device="cpu")
    # The same code path on the same kind of CPU gives the same bits; allow one image per 100
    # for another CPU's float rounding flipping a borderline prediction.
    tolerance = 1.0 / 100
    for old_row, new_row in zip(stored.matrix(), again.matrix()):
        assert np.allclose(old_row, new_row, atol=tolerance, rtol=0), (old_row, new_row)
    assert stored.reference_accuracy == pytest.approx(again.reference_accuracy, abs=tolerance)


def test_an_old_cka_run_is_found_and_recomputed_alike(old_store):
    from core.runs.cka_runs import cka_config
    from core.similarity.networks import model_cka

    run = old_store.get_run(REFERENCE["cka"])
    config = cka_config(**{k: run["config"][k] for k in ("model_a", "model_b", "limit", "batch_size")})
    assert runs.find(old_store, "cka", config)["id"] == run["id"]
    stored = runs.load(old_store, run["id"])
    again = model_cka(config["model_a"], config["model_b"], limit=config["limit"], batch_size=config["batch_size"],
                      device="cpu")
    assert np.allclose(stored["cka"], again.cka, atol=1e-6, rtol=0)


def test_attributions_of_an_old_stitch_are_the_same(old_store):
    from core.runs.analysis import attributions_config, run_attributions

    ref = REFERENCE["attribution"]
    config = attributions_config("zoo/resnet_1111-s0", "zoo/resnet_2222-s0", method=ref["method"],
                                 index=ref["index"], run_id=REFERENCE["grid_lstsq"], cell=ref["cell"])
    result = runs.load(old_store, run_attributions(config, old_store, device="cpu"))
    for key, old_map in ref["maps"].items():
        new = result["results"][key]
        assert new["predictions"][0] == ref["predictions"][key]
        assert np.allclose(np.asarray(new["display"])[0], old_map, atol=1e-3, rtol=0), key
