"""Bad input, faults and concurrency: each property of the reliability issue, proven.

(Uploads, pickles, a worker killed mid-grid and cancelling are tested beside their modules:
test_checkpoints.py, test_pages.py, test_jobs.py.)
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core import runs
from core.engine.grid import run_grid
from core.engine.results import load_grid
from core.engine.stitches import NotStitchable, make_stitch
from core.runs import jobs, service
from core.runs.store import Store
from core.similarity.cka import cka_matrix

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
shapes = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 9), st.integers(1, 9)),  # maps (C, H, W)
    st.tuples(st.integers(1, 20), st.integers(1, 16)),  # tokens (T, D)
    st.tuples(st.integers(1, 40)),  # vectors (D,)
    st.lists(st.integers(1, 4), min_size=4, max_size=5).map(tuple),  # unsupported ranks
)


@FUZZ
@given(sender=shapes, receiver=shapes, bn=st.booleans(), cap=st.integers(10, 10_000))
def test_fuzz_stitch_shapes_either_fit_or_say_why(sender, receiver, bn, cap):
    try:
        stitch = make_stitch(sender, receiver, bn_before=bn, bn_after=bn, max_params=cap, seed=0)
    except NotStitchable as exc:
        assert str(sender) in str(exc) or "parameters" in str(exc) or "supported" in str(exc)
        return
    out = stitch.train()(torch.randn(3, *sender))  # BatchNorm in train mode needs > 1 example
    assert out.shape == (3, *receiver) and torch.isfinite(out).all()
    assert sum(p.numel() for p in stitch.linear.parameters()) <= cap


features = st.tuples(st.integers(1, 12), st.integers(1, 6)).flatmap(
    lambda nd: st.lists(st.lists(st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([math.nan, math.inf])),
                                 min_size=nd[1], max_size=nd[1]), min_size=nd[0], max_size=nd[0]))


@FUZZ
@given(a=features, kernel=st.sampled_from(["linear", "rbf"]), batch=st.sampled_from([None, 3, 4, 5]))
def test_fuzz_cka_returns_numbers_or_a_documented_error(a, kernel, batch):
    x = torch.tensor(a, dtype=torch.float32)
    y = torch.roll(x, 1, dims=1) * 2 + 1
    try:
        result = cka_matrix([x], [x, y], kernel=kernel, batch_size=batch)
    except ValueError as exc:  # the documented refusals: too few examples, constant or non-finite features
        assert any(word in str(exc) for word in ("at least", "constant", "NaN", "not positive", "undefined",
                                                 "bandwidth", "examples")), str(exc)
        return
    assert result.shape == (1, 2) and torch.isfinite(result).all()


def test_store_survives_a_writer_killed_mid_write(tmp_path):
    db = tmp_path / "crash.sqlite3"
    run_id = Store(db).create_run("grid", {"crash": True})
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from core.runs.store import Store
        store = Store({str(db)!r})
        k = 0
        while True:  # one transaction per cell, as fast as it goes, until killed
            store.put_cell({run_id!r}, f"s{{k}}", "r", "done", k / 1e6, {{"k": k}}, b"x" * 4096)
            k += 1
    """)], cwd=os.getcwd())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] > 200:
                break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store = Store(db)  # reopening replays the WAL; nothing half-written is visible
    with store.connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cells = store.cells(run_id)
    assert len(cells) > 200
    assert all(c["details"]["k"] == round(c["accuracy"] * 1e6) for c in cells)  # every row whole
    ks = sorted(c["details"]["k"] for c in cells)
    assert ks == list(range(len(ks)))  # committed in order, none lost before the last


def test_cuda_out_of_memory_retries_smaller_then_fails_clearly(monkeypatch):
    budgets = []

    def run(budget):
        budgets.append(budget)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(RuntimeError, match="ran out of memory even with the smallest chunks"):
        service._with_oom_retry(run)
    assert budgets == sorted(budgets, reverse=True) and len(budgets) == 3
    calls = []

    def second_try_works(budget):
        calls.append(budget)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    assert service._with_oom_retry(second_try_works) == "ok" and len(calls) == 2


def test_a_one_class_dataset_is_refused_with_the_reason(tmp_path):
    (tmp_path / "test" / "shirt").mkdir(parents=True)
    (tmp_path / "train" / "shirt").mkdir(parents=True)
    for split in ("train", "test"):
        for k in range(4):
            Image.new("L", (32, 32), color=k * 40).save(tmp_path / split / "shirt" / f"{k}.png")
    with pytest.raises(ValueError, match="classes"):
        run_grid({"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "mode": "lstsq",
                  "dataset": f"folder:{tmp_path}"}, device="cpu")


LAYERS = ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]


def test_eight_sessions_run_real_grids_at_once_and_each_gets_its_own(worker):
    store = worker
    submitted: dict[int, tuple[str, str]] = {}
    lock = threading.Lock()

    def session(k):
        pair = (LAYERS[k % 5], LAYERS[(k * 2 + 1) % 5])
        config = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "sender_layers": [pair[0]],
                  "receiver_layers": [pair[1]], "seed": k, "mode": "lstsq", "train_limit": 256, "eval_limit": 200}
        job = runs.submit(store, "grid", [config], "cpu", owner=f"session-{k}").job_id
        with lock:
            submitted[job] = pair

    threads = [threading.Thread(target=session, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if all(jobs.get(store, j)["status"] not in jobs.ACTIVE for j in submitted):
            break
        time.sleep(0.2)
    lost = 0
    for job_id, (i, j) in submitted.items():
        job = jobs.get(store, job_id)
        assert job["status"] == "done", job["message"]
        grid = load_grid(store, job["run_id"])
        assert grid.sender_layers == [i] and grid.receiver_layers == [j]  # its own grid, nobody else's
        value = grid.value(i, j)
        lost += value is None or not math.isfinite(value)
    assert lost == 0
