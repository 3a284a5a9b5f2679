"""The runs service: finding stored runs by identity, one queue entry per piece of work, the
same recipe everywhere, cancel within one unit of work in every phase, and pages that import
no torch."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from core import runs
from core.engine import grid as grid_module
from core.engine.fused import FusedStitches
from core.engine.grid import run_grid
from core.errors import Cancelled
from core.models import network as network_module
from core.runs import jobs, recipes

ROOT = Path(__file__).resolve().parent.parent
PAIR = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1"}


# --- finding and submitting ------------------------------------------------------------------------
def test_a_grid_stored_before_501_newer_runs_is_still_found_and_not_queued_again(store):
    config = recipes.grid_config(PAIR["sender"], PAIR["receiver"], "instant", "quick", sender_layers=["stem"],
                                 receiver_layers=["stem"])
    first = store.create_run("grid", runs.identity("grid", config, "cpu"))
    store.update_run(first, status="done")
    for k in range(501):  # one paper-scale sweep's worth of newer runs
        store.create_run("grid", {**config, "seed": k + 1})
    assert runs.find(store, "grid", config)["id"] == first  # the page's lookup ("auto": any device)
    assert runs.find(store, "grid", config, "cpu")["id"] == first
    assert runs.find(store, "grid", config, "cuda") is None  # bf16 on a GPU gives other numbers
    queued = runs.submit(store, "grid", [config], "auto")
    assert queued.job_id is None and queued.following == []
    assert jobs.list_jobs(store) == []


def test_work_queued_or_running_is_never_queued_twice(store):
    grid = recipes.grid_config(PAIR["sender"], PAIR["receiver"], "instant", "quick")
    control = {**grid, "control": "random-both"}
    first = runs.submit(store, "grid", [grid, control], "cpu", owner="a")
    again = runs.submit(store, "grid", [grid], "auto", owner="b")  # another session, another device choice
    assert first.job_id is not None and again.job_id is None and again.following == [first.job_id]
    third = {**grid, "control": "random-sender"}
    more = runs.submit(store, "grid", [control, third], "cpu", owner="b")
    assert more.following == [first.job_id] and more.job_id is not None
    assert jobs.get(store, more.job_id)["params"]["configs"] == [runs.kind_of("grid").normalize(third)]
    jobs.cancel(store, first.job_id)  # once it is no longer active, the same work may be queued again
    assert runs.submit(store, "grid", [grid], "cpu").job_id is not None


def test_a_checkpoint_saved_again_under_its_name_is_another_identity(tmp_path):
    """A re-upload under an existing name must not find the old grid: the weights are part of the
    identity (the page's lookup once compared fields and ignored them)."""
    import shutil

    from core.models import zoo

    path = tmp_path / "mine.safetensors"
    shutil.copy(zoo.manifest_path().parent / zoo.zoo_entry("resnet_1111-s0")["file"], path)
    config = recipes.grid_config(f"file:{path}", PAIR["receiver"], "instant", "quick")
    before = runs.identity_key("grid", config)
    shutil.copy(zoo.manifest_path().parent / zoo.zoo_entry("resnet_1111-s1")["file"], path)
    assert runs.identity_key("grid", config) != before


def test_the_same_recipe_from_the_page_the_cli_and_the_lesson_is_one_run():
    from core.cli import grid_settings
    from core.runs.lesson import LESSON_GRIDS
    from ui.grids import RECIPES, grid_config
    from ui.state import Selection

    lesson = LESSON_GRIDS["deeper"]
    selection = Selection(lesson["sender"], lesson["receiver"], "fashion-mnist", "cpu")
    paper = recipes.RECIPES["paper"]
    page = grid_config(selection, [], [], paper.label, recipes.BUDGETS["full"].label)
    assert RECIPES[paper.label] is paper
    args = argparse.Namespace(sender=lesson["sender"], receiver=lesson["receiver"], recipe="paper", budget=None,
                              sender_layers=None, receiver_layers=None, mode=None, epochs=None, batch_size=None,
                              lr=None, train_limit=None, eval_limit=None, max_stitch_params=None, control="none",
                              dataset="fashion-mnist", seed=0, bn_before=False, bn_after=False)
    keys = {runs.identity_key("grid", c) for c in (page, grid_settings(args), lesson)}
    assert len(keys) == 1
    args.epochs = 1.0  # an explicit flag overrides the recipe: another run
    assert runs.identity_key("grid", grid_settings(args)) not in keys


# --- cancel within one unit of work ------------------------------------------------------------------
class _Units:
    """Counts units of work per phase; ``cancel`` turns True once ``phase`` has done ``after``."""

    def __init__(self, phase: str, after: int):
        self.phase, self.after, self.done = phase, after, {}

    def count(self, phase: str) -> None:
        self.done[phase] = self.done.get(phase, 0) + 1

    def progress(self, event) -> None:
        if event.stage in ("lstsq", "evaluate", "cka") and "batch" in event.message:
            self.count(event.stage)

    def cancel(self) -> bool:
        return self.done.get(self.phase, 0) >= self.after


@pytest.fixture
def units(monkeypatch):
    def make(phase, after):
        counter = _Units(phase, after)
        step = FusedStitches._train_step

        def counted_step(self, *args, **kwargs):
            counter.count("train")
            return step(self, *args, **kwargs)

        monkeypatch.setattr(FusedStitches, "_train_step", counted_step)
        engine_network = grid_module.engine_network

        class Counted:  # a network whose forward passes (reference scoring's batches) are counted
            def __init__(self, net):
                self.net = net

            def __call__(self, images):
                counter.count("reference")
                return self.net(images)

        monkeypatch.setattr(grid_module, "engine_network", lambda net, **kw: Counted(engine_network(net, **kw)))
        return counter
    return make


GRID = {**PAIR, "sender_layers": ["stem", "layer2.0"], "receiver_layers": ["layer1.0"], "train_limit": 512,
        "eval_limit": 320, "batch_size": 64, "lstsq_images": 512}


@pytest.mark.parametrize("phase, mode", [("reference", "lstsq"), ("lstsq", "lstsq"), ("train", "train"),
                                         ("evaluate", "train")])
def test_a_grid_stops_after_the_unit_in_flight_in_every_phase(units, store, phase, mode):
    counter = units(phase, 2)
    network_module._cached_model.cache_clear()  # fresh networks: reference scoring is not skipped
    with pytest.raises(Cancelled):
        run_grid({**GRID, "mode": mode}, store=store, device="cpu", progress=counter.progress, cancel=counter.cancel)
    assert counter.done[phase] == 2, counter.done  # the check before the third unit stopped it
    run = store.list_runs("grid")[0]
    assert run["status"] == "cancelled"


def test_cka_stops_after_the_batch_in_flight(units):
    from core.similarity.networks import model_cka

    counter = units("cka", 2)
    with pytest.raises(Cancelled):
        model_cka(PAIR["sender"], PAIR["receiver"], ["stem"], ["stem"], limit=400, batch_size=100, device="cpu",
                  progress=counter.progress, cancel=counter.cancel)
    assert counter.done["cka"] == 2


def test_a_sweep_stops_after_the_step_in_flight_and_starts_no_other_grid(units, store):
    from core.runs.sweep import run_sweep, sweep_status

    counter = units("train", 1)
    sweep = {"models": ["zoo/resnet_1111-s*"], "pairs": "distinct", "controls": ["none"], "mode": "train",
             "train_limit": 1024, "eval_limit": 100, "grid": {"sender_layers": ["stem"], "receiver_layers": ["stem"]}}
    with pytest.raises(Cancelled):
        run_sweep(sweep, store, device="cpu", name="cancelled", cancel=counter.cancel)
    assert counter.done.get("train") == 1
    status = sweep_status(store, store.list_runs("sweep")[0]["id"])
    assert status["done"] == 0 and [g["status"] for g in status["grids"]].count("pending") == 1


def test_a_jobs_cancel_flag_is_read_at_the_next_check_not_seconds_later(store):
    queued = jobs.submit(store, "grid", [{"x": 1}], ["k"])
    context = jobs._JobContext(store, queued.job_id)
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (queued.job_id,))
    assert not context.cancelled()
    jobs.cancel(store, queued.job_id)
    assert context.cancelled()  # at once: no rate limit between the flag and the engine's next unit


# --- the worker computes, the pages only read ------------------------------------------------------
def test_pages_and_ui_import_no_torch():
    """Every ui module, and every module a page or app.py imports, in a fresh interpreter."""
    script = r'''
import ast, importlib, pathlib, sys
mods = {"ui." + f.stem for f in pathlib.Path("ui").glob("*.py") if f.stem != "__init__"}
for f in [*pathlib.Path("pages").glob("*.py"), pathlib.Path("app.py")]:
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
for m in sorted(mods):
    importlib.import_module(m)
    if "torch" in sys.modules:
        sys.exit(f"importing {m} imported torch")
print(len(mods))
'''
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 10


def _serve_until_idle(store):
    return runs.serve(store.path, poll=0.01, idle_exit=0.05)


def test_attributions_and_stitch_cka_requested_twice_compute_once(store, monkeypatch):
    from core.runs import analysis as analysis_runs
    from core.runs.analysis import attributions_config, stitch_cka_config

    grid = run_grid({**PAIR, "sender_layers": ["layer2.0"], "receiver_layers": ["layer2.0"], "mode": "lstsq",
                     "train_limit": 256, "eval_limit": 100}, store=store, device="cpu")
    attribution = attributions_config(PAIR["sender"], PAIR["receiver"], method="saliency", index=3,
                                      run_id=grid.run_id, cell=["layer2.0", "layer2.0"])
    cka = stitch_cka_config(grid.run_id, "layer2.0", "layer2.0", limit=200)
    computed = []
    for name in ("run_attributions", "run_stitch_cka"):
        original = getattr(analysis_runs, name)
        monkeypatch.setattr(analysis_runs, name, lambda *a, _o=original, _n=name, **k: (computed.append(_n),
                                                                                      _o(*a, **k))[1])
    for _ in range(2):  # two clicks, before and after the worker ran
        runs.submit(store, "attributions", [attribution], "cpu")
        runs.submit(store, "stitch-cka", [cka], "cpu")
    _serve_until_idle(store)
    for _ in range(2):
        assert runs.submit(store, "attributions", [attribution], "cpu").job_id is None
        assert runs.submit(store, "stitch-cka", [cka], "cpu").job_id is None
    assert sorted(computed) == ["run_attributions", "run_stitch_cka"]
    maps = runs.load(store, runs.find(store, "attributions", attribution)["id"])
    assert sorted(maps["results"]) == ["receiver", "sender", "stitched"] and maps["true_label"] is not None
    value = runs.load(store, runs.find(store, "stitch-cka", cka)["id"])["cka"]
    assert 0.0 <= value <= 1.0


def test_stored_attributions_draw_without_torch(store):
    """The figure the page shows, from a stored result, in a process without torch."""
    from core.runs.analysis import attributions_config, run_attributions

    config = attributions_config(PAIR["sender"], PAIR["receiver"], method="ig", index=0)
    run_id = run_attributions(config, store, device="cpu")
    script = rf'''
import sys
from core.runs.store import Store
from core import runs
from ui.attributions import figure
result = runs.load(Store({str(store.path)!r}), {run_id!r})
fig = figure(result, "fashion-mnist")
assert len(fig.axes) == 1 + 2 * 2, len(fig.axes)  # the image, then a map and its colour bar per network
assert "torch" not in sys.modules
'''
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_link_naming_a_model_is_checked_without_loading_it(monkeypatch):
    from core.models import catalog, sources

    monkeypatch.setattr(grid_module, "cached_model", lambda *a, **k: pytest.fail("the sidebar loaded a model"))
    assert catalog.layers_of("zoo/resnet_1111-s0@random:7") == catalog.layers_of("zoo/resnet_1111-s0")
    with pytest.raises(ValueError):
        sources.check("file:/etc/passwd", allowed_files=[])
