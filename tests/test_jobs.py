"""The job runner: order, progress, cancel, bounds, many sessions, and a worker killed mid-grid."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from core import runs
from core.engine.results import load_grid
from core.progress import Progress, check_cancel
from core.runs import jobs
from core.runs.store import Store


def _echo_execute(store, configs, options, progress, cancel):
    """A job that sleeps in steps: drives the queue and the worker without torch."""
    run_id = None
    for config in configs:
        steps, delay = int(config.get("steps", 5)), float(config.get("delay", 0.05))
        for k in range(steps):
            check_cancel(cancel)
            time.sleep(delay)
            progress(Progress("echo", (k + 1) / steps, f"step {k + 1}/{steps}"))
        run_id = store.create_run("echo", config)
        store.update_run(run_id, status="done", summary={"value": config.get("value")})
    return run_id


runs.register(runs.Kind("echo", dict, lambda config, _device: config, _echo_execute, lambda s, r: s.get_run(r)))


def _submit(store, config, owner=None):
    """Queue one echo job (each with its own identity: a nonce keeps equal configs apart)."""
    queued = runs.submit(store, "echo", [{**config, "nonce": time.perf_counter_ns()}], owner=owner)
    return queued.job_id


def _wait(store, job_ids, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [jobs.get(store, j)["status"] for j in job_ids]
        if all(s not in jobs.ACTIVE for s in states):
            return states
        time.sleep(0.1)
    raise TimeoutError(f"jobs still active: {states}")


def test_eight_sessions_submit_at_once_and_each_gets_its_own_result(worker):
    store = worker
    ids: dict[str, int] = {}

    def session(k):
        ids[f"s{k}"] = _submit(store, {"steps": 3, "delay": 0.01, "value": k}, owner=f"s{k}")

    threads = [threading.Thread(target=session, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _wait(store, list(ids.values())) == ["done"] * 8
    for owner, job_id in ids.items():
        job = jobs.get(store, job_id)
        assert job["owner"] == owner and job["progress"] == 1.0
        assert store.get_run(job["run_id"])["summary"]["value"] == int(owner[1:])
        assert [j["id"] for j in jobs.list_jobs(store, owner=owner)] == [job_id]
    started = sorted((jobs.get(store, j)["started"], j) for j in ids.values())
    assert [j for _, j in started] == sorted(ids.values())  # one worker, first come first served


def test_cancel_queued_and_running_jobs(worker):
    store = worker
    long_job = _submit(store, {"steps": 200, "delay": 0.02})
    waiting = _submit(store, {"steps": 1})
    jobs.cancel(store, waiting)
    deadline = time.monotonic() + 10
    while jobs.get(store, long_job)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    jobs.cancel(store, long_job)
    assert _wait(store, [long_job, waiting]) == ["cancelled", "cancelled"]
    assert time.monotonic() - started < 10  # stops within seconds (loose: a busy CI machine is slow)


def test_queue_is_bounded(tmp_path, monkeypatch):
    store = Store(tmp_path / "q.sqlite3")
    monkeypatch.setenv("STITCHLAB_MAX_QUEUE", "3")
    for _ in range(3):
        _submit(store, {})
    with pytest.raises(jobs.QueueFull, match="queue is full .3 jobs waiting"):
        _submit(store, {})
    with pytest.raises(ValueError, match="unknown job kind"):
        runs.submit(store, "mine bitcoin", [{}])


def test_a_failing_job_reports_and_the_worker_goes_on(worker):
    store = worker
    # a name that passes the settings' check but not the zoo's (the worker finds out)
    bad = jobs.submit(store, "grid", [{"sender": "zoo/nope", "receiver": "zoo/resnet_1111-s1"}], ["bad"],
                      {"device": "cpu"}).job_id
    good = _submit(store, {"steps": 1})
    assert _wait(store, [bad, good]) == ["failed", "done"]
    assert "unknown zoo model 'nope'" in jobs.get(store, bad)["message"]


GRID = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", "mode": "lstsq+train", "epochs": 1.0,
        "sender_layers": ["stem", "layer2.0", "layer4.0"], "receiver_layers": ["layer1.0", "layer2.0", "layer3.0"],
        "train_limit": 1536, "eval_limit": 300, "batch_size": 128}


def _queue_grid(store):
    """Queue GRID without starting the app's worker (the test starts its own)."""
    return jobs.submit(store, "grid", [GRID], [runs.identity_key("grid", GRID)], {"device": "cpu"}).job_id


def _worker_process(db):
    return subprocess.Popen([sys.executable, "-m", "core", "worker", "--db", str(db), "--idle-exit", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_worker_once(db, ready, timeout=300) -> None:
    """Start a worker process on ``db`` and SIGKILL it as soon as ``ready()`` holds."""
    proc = _worker_process(db)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def _stored_cells(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]


def test_worker_killed_mid_grid_loses_nothing_and_resumes_to_the_same_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_CPU_CHUNK_MB", "1")  # one stitch per fused chunk: cells land one by one
    killed_db, clean_db = tmp_path / "killed.sqlite3", tmp_path / "clean.sqlite3"
    store = Store(killed_db)
    job = _queue_grid(store)
    _kill_worker_once(killed_db, lambda: _stored_cells(killed_db) >= 3)  # some, but not all, cells stored
    run_id = jobs.get(store, job)["run_id"]
    before = {(c["sender_layer"], c["receiver_layer"]): c["accuracy"] for c in store.cells(run_id)}
    assert 3 <= len(before) < 9, len(before)
    assert jobs.get(store, job)["status"] == "running"  # as the dead worker left it

    proc = _worker_process(killed_db)  # a new worker requeues the orphan and resumes it
    try:
        assert _wait(store, [job]) == ["done"]
    finally:
        proc.terminate()
        proc.wait()
    resumed = load_grid(store, jobs.get(store, job)["run_id"])
    for key, accuracy in before.items():  # what was stored before the kill was kept, not recomputed
        assert resumed.cells[key]["accuracy"] == accuracy

    clean = Store(clean_db)
    reference = _queue_grid(clean)
    proc = _worker_process(clean_db)
    try:
        assert _wait(clean, [reference]) == ["done"]
    finally:
        proc.terminate()
        proc.wait()
    assert resumed.matrix() == load_grid(clean, jobs.get(clean, reference)["run_id"]).matrix()


def test_ensure_worker_starts_one_worker_per_store(tmp_path):
    db = tmp_path / "w.sqlite3"
    first = jobs.ensure_worker(db)
    try:
        assert jobs.ensure_worker(db) == first == jobs.worker_pid(db)
    finally:
        os.kill(first, signal.SIGTERM)


def test_a_status_check_at_the_wrong_moment_does_not_send_the_worker_away(tmp_path):
    import fcntl

    store = Store(tmp_path / "w.sqlite3")
    job = jobs.submit(store, "echo", [{"steps": 1}], ["one"]).job_id
    probe = open(jobs._lock_path(store.path), "a+")
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what worker_pid() does for an instant
    threading.Timer(0.3, lambda: fcntl.flock(probe, fcntl.LOCK_UN)).start()
    try:
        assert runs.serve(store.path, poll=0.02, idle_exit=0.1) == 1
    finally:
        probe.close()
    assert jobs.get(store, job)["status"] == "done"


def test_a_job_whose_worker_died_is_served_again_when_followed_without_a_new_submission(tmp_path):
    """SIGKILL the worker mid-job; following the job (the page's progress panel, or a second
    click on Run) recovers it and starts a worker: nothing else needs submitting."""
    db = tmp_path / "dead.sqlite3"
    store = Store(db)
    job = _queue_grid(store)
    _kill_worker_once(db, lambda: jobs.get(store, job)["status"] == "running")
    assert jobs.get(store, job)["status"] == "running" and jobs.worker_pid(db) is None  # left as it died
    assert runs.submit(store, "grid", [GRID], "cpu").following == [job]  # a second click follows it ...
    pid = jobs.ensure_worker(db)  # ... and what following does brings it back
    try:
        assert _wait(store, [job]) == ["done"]
        assert jobs.get(store, job)["attempts"] == 2
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_job_that_keeps_killing_its_worker_is_failed_and_the_queue_moves_on(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_JOB_ATTEMPTS", "3")
    store = Store(tmp_path / "oom.sqlite3")
    killer = jobs.submit(store, "echo", [{"kills": "its worker"}], ["killer"]).job_id
    behind = jobs.submit(store, "echo", [{"steps": 1}], ["behind"]).job_id
    for attempt in range(3):  # each time a worker claims it, then dies (another worker finds it so)
        assert jobs._claim(store)["id"] == killer
        assert jobs.recover(store, serving_pid=2**22 + attempt) == [killer]
    failed = jobs.get(store, killer)
    assert failed["status"] == "failed" and "3 times" in failed["message"]
    assert jobs._claim(store)["id"] == behind


def test_a_recycled_pid_does_not_keep_a_dead_workers_job_running(tmp_path):
    """The job's worker pid is alive (here: this very process) but no worker holds the lock: the
    pid was reused, the job is an orphan."""
    store = Store(tmp_path / "pid.sqlite3")
    job = jobs.submit(store, "echo", [{}], ["one"]).job_id
    jobs._claim(store)
    assert jobs.get(store, job)["worker_pid"] == os.getpid() and jobs.worker_pid(store.path) is None
    assert jobs.recover(store) == [job] and jobs.get(store, job)["status"] == "queued"


def test_a_frozen_workers_job_is_failed_with_the_reason(tmp_path):
    store = Store(tmp_path / "frozen.sqlite3")
    job = jobs.submit(store, "echo", [{}], ["one"]).job_id
    jobs._claim(store)
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time() - 600, job))
    assert jobs.recover(store, serving_pid=os.getpid()) == [job]
    assert "no heartbeat for 600 s" in jobs.get(store, job)["message"]
