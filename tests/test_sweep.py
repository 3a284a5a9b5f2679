import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load as load_safetensors

from core.engine import grid as grid_module
from core.engine.results import load_grid
from core.runs import sweep_ray
from core.runs.store import Store
from core.runs.sweep import (
    SweepConfig,
    depth_table,
    enumerate_pairs,
    expand_models,
    paper_effect,
    run_sweep,
    sweep_status,
    sweep_summary,
)

# Two seeds of the smallest ResNet, both orders, real and random sender: 4 least-squares grids
# of 3 x 3 layers, about a second each on a CPU.
LAYERS = ["stem", "layer2.0", "layer4.0"]
TINY = {"models": ["zoo/resnet_1111-s*"], "pairs": "distinct", "controls": ["none", "random-sender"],
        "mode": "lstsq", "train_limit": 200, "eval_limit": 150,
        "grid": {"sender_layers": LAYERS, "receiver_layers": LAYERS}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Ray runs each grid on one thread (num_cpus=1); the local sweeps here do the same, which also
    # spares a busy two-core machine the stalls of OpenMP threads waiting for each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _key(grid):
    return grid["sender"], grid["receiver"], grid["control"]


def test_patterns_expand_in_registry_order_and_pairs_count():
    assert expand_models("zoo/resnet_1111-s*") == ["zoo/resnet_1111-s0", "zoo/resnet_1111-s1"]
    five = expand_models(["zoo/resnet_*-s0"])
    assert len(five) == 5 and five[0] == "zoo/resnet_1111-s0"
    assert expand_models("zoo/vgg*,zoo/vgg_small-s0,torchvision/resnet18") == ["zoo/vgg_small-s0",
                                                                              "torchvision/resnet18"]
    names = ["a", "b", "c"]
    assert len(enumerate_pairs(names, "all")) == 9 and ("a", "a") in enumerate_pairs(names, "all")
    assert enumerate_pairs(names, "diagonal") == [("a", "a"), ("b", "b"), ("c", "c")]
    distinct = enumerate_pairs(names, "distinct")
    assert len(distinct) == 6 and all(s != r for s, r in distinct)
    grids = SweepConfig(**TINY).grids()
    assert [(g.sender[-2:], g.receiver[-2:], g.control) for g in grids] == [
        ("s0", "s1", "none"), ("s1", "s0", "none"), ("s0", "s1", "random-sender"), ("s1", "s0", "random-sender")]
    with pytest.raises(ValueError, match="'zoo/nope\\*' matches no model"):
        expand_models("zoo/nope*")
    with pytest.raises(ValueError, match="unknown pairs 'upper'"):
        SweepConfig(models=["zoo/*"], pairs="upper").grids()
    with pytest.raises(ValueError, match="unknown control 'random'"):
        SweepConfig(models=["zoo/*"], controls=["random"]).grids()


def test_paper_effect_and_depth_table_by_hand():
    rows = [{"control": "none", "sender_depth": s, "receiver_depth": r, "accuracy": a}
            for s, r, a in [(1.0, 0.0, 0.9), (0.5, 0.0, 0.7), (0.0, 1.0, 0.3), (0.5, 0.5, 0.8), (0.0, 0.0, 0.6)]]
    rows.append({"control": "random-both", "sender_depth": 1.0, "receiver_depth": 0.0, "accuracy": 0.4})
    effect = paper_effect(rows)
    assert effect["none"]["lower_left"] == {"mean_accuracy": pytest.approx(0.8), "cells": 2}
    assert effect["none"]["upper_right"] == {"mean_accuracy": pytest.approx(0.3), "cells": 1}
    assert effect["none"]["diagonal"]["mean_accuracy"] == pytest.approx(0.7)
    assert effect["random-both"]["diagonal"] == {"mean_accuracy": None, "cells": 0}
    table = {(t["control"], t["sender_bin"], t["receiver_bin"]): t for t in depth_table(rows, bins=2)}
    assert table[("none", 1, 0)]["mean_accuracy"] == pytest.approx(0.8)  # depths 1.0 and 0.5 share the top bin
    assert table[("none", 1, 1)]["cells"] == 1 and table[("none", 0, 1)]["mean_accuracy"] == pytest.approx(0.3)


def test_region_means_of_grids_of_unequal_depth():
    from core.engine.results import region_means

    # 3 sender layers (depths 0, .5, 1) x 2 receiver layers (0, 1); None is skipped, not 0
    matrix = [[0.6, 0.2], [0.9, None], [0.7, 0.8]]
    assert region_means(matrix) == pytest.approx({"lower_left": 0.8, "upper_right": 0.2, "diagonal": 0.7})
    assert region_means([[0.5]]) == {"lower_left": None, "upper_right": None, "diagonal": 0.5}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny sweep run locally: interrupted after its first grid, then resumed."""
    store = Store(tmp_path_factory.mktemp("local") / "a.sqlite3")

    def interrupt_after_first_grid(event):
        if event.stage == "grid" and event.counts["done"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(TINY, store, device="cpu", name="tiny", progress=interrupt_after_first_grid)
    sweep_id = store.list_runs("sweep")[0]["id"]
    interrupted = sweep_status(store, sweep_id)

    computed, events = [], []
    original = grid_module.run_grid

    def counting(config, *args, **kwargs):
        computed.append((config.sender, config.receiver, config.control))
        return original(config, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grid_module, "run_grid", counting)
        final = run_sweep(TINY, store, device="cpu", name="tiny", progress=events.append)
    return {"store": store, "interrupted": interrupted, "final": final, "computed": computed, "events": events}


def test_an_interrupted_sweep_resumes_only_the_remaining_grids(local_sweep):
    interrupted, final = local_sweep["interrupted"], local_sweep["final"]
    assert interrupted["status"] == "cancelled" and interrupted["total"] == 4
    assert interrupted["done"] == 1 and interrupted["pending"] == 3
    first = next(g for g in interrupted["grids"] if g["status"] == "done")
    assert local_sweep["computed"] == [_key(g) for g in interrupted["grids"] if g["status"] != "done"]
    assert final["run_id"] == interrupted["run_id"]  # the same sweep record, resumed
    assert final["status"] == "done" and final["done"] == 4 and final["failed"] == final["running"] == 0
    assert {g["run_id"] for g in final["grids"]} >= {first["run_id"]} and all(g["run_id"] for g in final["grids"])
    store = local_sweep["store"]
    assert store.get_artifact(final["run_id"], "grids")[0]["run_id"] == final["grids"][0]["run_id"]
    events = local_sweep["events"]
    assert events[0].stage == "start" and events[0].counts["done"] == 1 and events[-1].stage == "done"
    assert [e.counts["done"] for e in events if e.stage == "grid"] == [2, 3, 4]
    assert any(e.eta is not None for e in events)
    assert all(0 <= e.fraction <= 1 for e in events) and events[-1].fraction == 1


def test_summary_gives_relative_depths_per_cell(local_sweep):
    store, final = local_sweep["store"], local_sweep["final"]
    rows = sweep_summary(store, final["run_id"])
    assert len(rows) == 4 * 9
    assert {r["sender_depth"] for r in rows} == {0.0, 0.5, 1.0}
    stem_to_last = next(r for r in rows if r["sender_layer"] == "stem" and r["receiver_layer"] == "layer4.0")
    assert (stem_to_last["sender_depth"], stem_to_last["receiver_depth"]) == (0.0, 1.0)
    effect = paper_effect(rows)
    assert set(effect) == {"none", "random-sender"}
    assert effect["none"]["lower_left"]["cells"] == effect["none"]["upper_right"]["cells"] == 2 * 3
    assert all(0 <= region["mean_accuracy"] <= 1 for c in effect.values() for region in c.values())
    # a finished sweep is not recomputed
    again = run_sweep(TINY, store, device="cpu", name="tiny")
    assert again["run_id"] == final["run_id"] and again["done"] == 4
    with pytest.raises(ValueError, match="not a sweep"):
        sweep_status(store, final["grids"][0]["run_id"])


def test_a_failing_grid_fails_alone_and_a_rerun_retries_it(tmp_path, monkeypatch):
    config = {**TINY, "models": ["zoo/resnet_1111-s0"], "pairs": "diagonal"}
    original, store = grid_module.run_grid, Store(tmp_path / "f.sqlite3")

    def broken_control(config, *args, **kwargs):
        if config.control == "random-sender":
            raise ValueError("no luck")
        return original(config, *args, **kwargs)

    monkeypatch.setattr(grid_module, "run_grid", broken_control)
    result = run_sweep(config, store, device="cpu", name="broken")
    assert (result["status"], result["done"], result["failed"]) == ("failed", 1, 1)
    failed = next(g for g in result["grids"] if g["status"] == "failed")
    assert store.get_run(failed["run_id"])["message"] == "ValueError: no luck"
    assert "1 of 2 grids failed" in store.get_run(result["run_id"])["message"]
    monkeypatch.setattr(grid_module, "run_grid", original)
    again = run_sweep(config, store, device="cpu", name="broken")
    assert again["status"] == "done" and again["done"] == 2
    assert load_grid(store, failed["run_id"]).status == "done"  # the failed run was resumed, not duplicated


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def _recording(original, marker_dir, behaviour=None):
    """A task that records the pid of each attempt in `<control>.<grid>.<attempt>` and may misbehave;
    defined in a function so cloudpickle ships it by value to the Ray workers. The grid (sender and
    receiver) is part of the name: two grids of one control run at the same time in two workers,
    and a name by control alone let them count the same attempt number and overwrite each other."""

    def task(config, device):
        import os
        import re

        grid = re.sub(r"\W", "_", f"{config['sender']}-{config['receiver']}")
        attempt = len(list(marker_dir.glob(f"{config['control']}.{grid}.*"))) + 1
        (marker_dir / f"{config['control']}.{grid}.{attempt}").write_text(str(os.getpid()))
        if behaviour is not None:
            behaviour(config["control"], attempt)
        return original(config, device)

    return task


def test_ray_gives_the_same_grids_as_local(local_sweep, ray_local, tmp_path, monkeypatch):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    monkeypatch.setattr(sweep_ray, "_grid_task", _recording(sweep_ray._grid_task, attempts))
    store = Store(tmp_path / "b.sqlite3")
    result = run_sweep(TINY, store, executor="ray", device="cpu", name="tiny")
    assert result["status"] == "done" and result["done"] == 4
    local_store, local = local_sweep["store"], local_sweep["final"]
    by_key = {_key(g): g["run_id"] for g in result["grids"]}
    for grid in local["grids"]:
        a, b = load_grid(local_store, grid["run_id"]), load_grid(store, by_key[_key(grid)])
        assert b.status == "done" and b.sender_layers == a.sender_layers and b.receiver_layers == a.receiver_layers
        assert b.status_matrix() == a.status_matrix()
        for row_a, row_b in zip(a.matrix(), b.matrix()):
            assert row_b == pytest.approx(row_a, abs=1e-6)
        assert (b.sender_accuracy, b.reference_accuracy) == pytest.approx((a.sender_accuracy, a.reference_accuracy))
        # the trained stitches travel back from the workers: the same weights as the local run's
        done = [(c["sender_layer"], c["receiver_layer"]) for c in local_store.cells(grid["run_id"])
                if c["status"] == "done"]
        assert done
        for i, j in done:  # (Ray workers run with other thread counts: equal up to float rounding)
            ray_weights = load_safetensors(store.cell_stitch(b.run_id, i, j))
            local_weights = load_safetensors(local_store.cell_stitch(a.run_id, i, j))
            assert all(torch.allclose(ray_weights[k], local_weights[k], atol=1e-5) for k in local_weights), (i, j)
    from core.engine.stitched import load_stitched

    grid = local["grids"][0]
    assert load_stitched(store, by_key[_key(grid)], "stem", "stem").run["id"] == by_key[_key(grid)]
    pids = [p.read_text() for p in attempts.iterdir()]
    assert len(pids) == 4 and len(set(pids)) < 4  # workers are reused across grids


def test_ray_retries_a_dead_worker_and_transient_errors_only(ray_local, tmp_path, monkeypatch):
    def misbehave(control, attempt):
        if control == "none" and attempt == 1:
            os._exit(1)  # the worker dies: Ray retries the task (max_retries)
        if control == "random-sender" and attempt == 1:
            raise OSError("file system hiccup")  # retried: retry_exceptions lists OSError
        if control == "random-receiver":
            raise ValueError("a deterministic error")  # not retried: the grid fails

    config = {**TINY, "models": ["zoo/resnet_1111-s0"], "pairs": "diagonal",
              "controls": ["none", "random-sender", "random-receiver"]}
    original, marks = sweep_ray._grid_task, tmp_path / "attempts"
    marks.mkdir()
    monkeypatch.setattr(sweep_ray, "_grid_task", _recording(original, marks, misbehave))
    store = Store(tmp_path / "c.sqlite3")
    result = run_sweep(config, store, executor="ray", device="cpu", name="flaky")
    attempts = {c: len(list(marks.glob(f"{c}.*"))) for c in config["controls"]}
    assert attempts == {"none": 2, "random-sender": 2, "random-receiver": 1}
    assert result["status"] == "failed" and (result["done"], result["failed"]) == (2, 1)
    failed = next(g for g in result["grids"] if g["status"] == "failed")
    assert "ValueError: a deterministic error" in store.get_run(failed["run_id"])["message"]
    # Rerunning the sweep retries only the failed grid, into the same grid run.
    monkeypatch.setattr(sweep_ray, "_grid_task", original)
    again = run_sweep(config, store, executor="ray", device="cpu", name="flaky")
    assert again["status"] == "done" and again["run_id"] == result["run_id"]
    assert next(g for g in again["grids"] if g["control"] == "random-receiver")["run_id"] == failed["run_id"]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_sweep_writes_json(tmp_path):
    out_path = tmp_path / "sweep.json"
    out = _cli("sweep", "--models", "zoo/resnet_1111-s0", "--pairs", "diagonal", "--mode", "lstsq",
               "--train-limit", "200", "--eval-limit", "150", "--device", "cpu", "--db", str(tmp_path / "s.db"),
               "--name", "cli", "--json", str(out_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out_path.read_text())
    assert (data["status"], data["total"], data["done"]) == ("done", 1, 1)
    assert data["grids"][0]["sender"] == "zoo/resnet_1111-s0" and data["effect"]["none"]["diagonal"]["cells"] == 5
    assert "[1/1 grids]" in out.stderr


@pytest.mark.parametrize("args,expected", [
    (["--models", "zoo/nope*"], "'zoo/nope*' matches no model"),
    (["--models", "zoo/resnet_1111-s0", "--executor", "dask"], "unknown executor 'dask'"),
    (["--models", "zoo/resnet_1111-s0", "--executor", "ray", "--ray-address", "127.0.0.1:1"],
     "cannot reach the Ray cluster at 127.0.0.1:1"),
])
def test_cli_bad_input_is_one_clear_line(args, expected, tmp_path):
    out = _cli("sweep", *args, "--name", "x", "--db", str(tmp_path / "x.db"), "--device", "cpu")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr


def test_ray_executor_without_ray_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without Ray
    with pytest.raises(ValueError, match=r"the ray executor needs Ray: pip install -r requirements-ray\.txt"):
        run_sweep(TINY, Store(tmp_path / "s.db"), executor="ray", device="cpu", name="no-ray")
    code = main(["sweep", "--models", "zoo/resnet_1111-s0", "--executor", "ray", "--name", "x",
                 "--db", str(tmp_path / "x.db"), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: the ray executor needs Ray: pip install -r requirements-ray.txt"), lines


def test_reading_a_sweep_imports_neither_torch_nor_ray():
    code = "import sys, core.runs.sweep; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
