"""Background jobs: a queue in the store's SQLite file, and one worker process that runs it.

The dashboard never computes inline (Streamlit reruns the script on every click): a page
:func:`submit`\\s a job and polls :func:`get`. One worker process per store claims queued
jobs in order (one GPU, one job at a time), reports progress and an ETA into the job's row,
checks the job's cancel flag between steps, and commits results to the store as they come.

Why a process and a SQLite queue rather than a thread: a worker killed mid-grid (even by
SIGKILL) loses only the cell in flight; the next worker finds the job still marked
``running`` under a dead pid, puts it back in the queue, and the grid resumes from the cells
already stored. Every browser session, and every app process, shares the one queue.

Job kinds: ``grid`` (params: a :class:`core.grid.GridConfig` dict, or ``{"configs": [...]}`` for
a grid with its controls, plus ``device`` and ``name``)
and ``cka`` (params of :func:`core.cka.model_cka` plus ``device``). ``echo`` exists for tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import paths
from .store import Store

__all__ = ["submit", "get", "cancel", "list_jobs", "run_worker", "ensure_worker", "QueueFull", "JOB_KINDS",
           "max_queue"]

JOB_KINDS = ("grid", "cka", "echo")
ACTIVE = ("queued", "running")
_PROGRESS_INTERVAL = 0.25  # seconds between progress writes: enough for a live bar, cheap for SQLite
_CANCEL_INTERVAL = 0.5


class QueueFull(RuntimeError):
    """Too many jobs are waiting; the message says how many and what to do."""


def max_queue() -> int:
    """Most jobs that may wait at once (``STITCHLAB_MAX_QUEUE``, default 32)."""
    return int(os.environ.get("STITCHLAB_MAX_QUEUE", "32"))


# --- the client side: what pages call ----------------------------------------------------------
def submit(store: Store, kind: str, params: dict, owner: str | None = None) -> int:
    """Queue a job; returns its id. Raises :class:`QueueFull` when the queue is at its bound."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}: one of {', '.join(JOB_KINDS)}")
    with store.transaction() as conn:
        waiting = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
        if waiting >= max_queue():
            raise QueueFull(f"the job queue is full ({waiting} jobs waiting, limit {max_queue()}); "
                            f"wait for some to finish or cancel yours (STITCHLAB_MAX_QUEUE raises the limit)")
        cur = conn.execute("INSERT INTO jobs (kind, params, owner, status, message, created) "
                           "VALUES (?, ?, ?, 'queued', 'waiting for the worker', ?)",
                           (kind, json.dumps(params, sort_keys=True), owner, time.time()))
        return int(cur.lastrowid)


def get(store: Store, job_id: int) -> dict:
    with store.connect() as conn:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        ahead = 0
        if row is not None and row["status"] == "queued":
            ahead = conn.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running') AND id < ?",
                                 (job_id,)).fetchone()[0]
    if row is None:
        raise KeyError(f"no job {job_id}")
    job = dict(row)
    job["params"] = json.loads(job["params"])
    job["ahead"] = ahead
    return job


def list_jobs(store: Store, owner: str | None = None, active_only: bool = False, limit: int = 100) -> list[dict]:
    query, args = "SELECT * FROM jobs", []
    clauses = []
    if owner is not None:
        clauses.append("owner = ?")
        args.append(owner)
    if active_only:
        clauses.append("status IN ('queued', 'running')")
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += " ORDER BY id DESC LIMIT ?"
    with store.connect() as conn:
        rows = conn.execute(query, (*args, limit)).fetchall()
    return [{**dict(r), "params": json.loads(r["params"])} for r in rows]


def cancel(store: Store, job_id: int) -> None:
    """Ask a job to stop: a queued job is cancelled at once, a running one at its next step."""
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'cancelled', message = 'cancelled before it started', "
                     "finished = ? WHERE id = ? AND status = 'queued'", (time.time(), job_id))
        conn.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND status = 'running'", (job_id,))


# --- the worker side ---------------------------------------------------------------------------
class _JobContext:
    """Progress and cancel plumbing for one running job, rate-limited against SQLite."""

    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def progress(self, event: dict) -> None:
        now = time.monotonic()
        if now - self._last_progress < _PROGRESS_INTERVAL and event.get("fraction", 0) < 1.0:
            return
        self._last_progress = now
        with self.store.transaction() as conn:
            conn.execute("UPDATE jobs SET progress = ?, message = ?, eta = ?, heartbeat = ?, "
                         "run_id = COALESCE(?, run_id) WHERE id = ?",
                         (float(event.get("fraction", 0.0)), event.get("message"), event.get("eta"), time.time(),
                          event.get("run_id"), self.job_id))

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= _CANCEL_INTERVAL:
            self._last_cancel_check = now
            with self.store.connect() as conn:
                row = conn.execute("SELECT cancel FROM jobs WHERE id = ?", (self.job_id,)).fetchone()
            self._cancelled = bool(row and row[0])
        return self._cancelled


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _requeue_orphans(store: Store) -> int:
    """Jobs left 'running' by a worker that died go back to the queue (they resume from the store)."""
    with store.transaction() as conn:
        rows = conn.execute("SELECT id, worker_pid FROM jobs WHERE status = 'running'").fetchall()
        orphans = [r["id"] for r in rows if r["worker_pid"] != os.getpid() and not _pid_alive(r["worker_pid"])]
        for job_id in orphans:
            conn.execute("UPDATE jobs SET status = 'queued', worker_pid = NULL, "
                         "message = 'the worker stopped; resuming from the stored cells' WHERE id = ?", (job_id,))
    return len(orphans)


def _claim(store: Store) -> dict | None:
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        conn.execute("UPDATE jobs SET status = 'running', worker_pid = ?, started = ?, heartbeat = ?, "
                     "message = 'starting' WHERE id = ?", (os.getpid(), time.time(), time.time(), row["id"]))
    job = dict(row)
    job["params"] = json.loads(job["params"])
    return job


def _finish(store: Store, job_id: int, status: str, message: str | None, run_id: str | None = None,
            error: str | None = None) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = ?, message = ?, error = ?, finished = ?, progress = CASE WHEN ? = "
                     "'done' THEN 1.0 ELSE progress END, run_id = COALESCE(?, run_id), eta = NULL WHERE id = ?",
                     (status, message, error, time.time(), status, run_id, job_id))


def _execute(store: Store, job: dict, ctx: _JobContext) -> str | None:
    """Run one job; returns the run id it produced."""
    params = dict(job["params"])
    kind = job["kind"]
    if kind == "echo":  # a job that sleeps in steps: lets tests drive the runner without torch
        steps, delay = int(params.get("steps", 5)), float(params.get("delay", 0.05))
        for k in range(steps):
            if ctx.cancelled():
                from .fused import Cancelled

                raise Cancelled()
            time.sleep(delay)
            ctx.progress({"fraction": (k + 1) / steps, "message": f"step {k + 1}/{steps}"})
        run_id = store.create_run("echo", {"job": job["id"], **params})
        store.update_run(run_id, status="done", summary={"value": params.get("value")})
        return run_id
    device = params.pop("device", "auto")
    name = params.pop("name", None)
    if kind == "grid":  # one grid, or {"configs": [...]}: a grid and its controls, sharing one data pass
        from .grid import run_grids

        configs = params["configs"] if "configs" in params else [params]
        results = _with_oom_retry(lambda budget: run_grids(configs, store=store, device=device, progress=ctx.progress,
                                                           cancel=ctx.cancelled, names=[name] * len(configs),
                                                           memory_fraction=budget))
        return results[0].run_id
    if kind == "cka":
        from .cka_runs import run_cka

        return run_cka(params, store=store, device=device, progress=ctx.progress, cancel=ctx.cancelled, name=name)
    raise ValueError(f"unknown job kind {kind!r}")


def _with_oom_retry(run, budgets=(0.45, 0.2, 0.08)):
    """CUDA out of memory: retry with smaller fused chunks (results do not change), then give up."""
    import torch

    for k, budget in enumerate(budgets):
        try:
            return run(budget)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if k == len(budgets) - 1:
                raise RuntimeError("the GPU ran out of memory even with the smallest chunks; use fewer layers, "
                                   "a smaller batch size, or the CPU") from None


def run_worker(db: str | os.PathLike | None = None, poll: float = 0.5, idle_exit: float | None = 600.0,
               max_jobs: int | None = None) -> int:
    """Serve the queue of the store at ``db`` until idle for ``idle_exit`` seconds; returns jobs run.

    Only one worker serves a store: a second one exits at once (an exclusive lock file).
    """
    store = Store(db)
    lock = open(_lock_path(store.path), "a+")
    # worker_pid() takes the lock for an instant to see whether a worker holds it; keep trying a
    # little while, so that a check at the wrong moment does not send the only worker away.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                return 0
            time.sleep(0.05)
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    done, idle_since = 0, time.monotonic()
    try:
        _requeue_orphans(store)
        while max_jobs is None or done < max_jobs:
            job = _claim(store)
            if job is None:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                time.sleep(poll)
                continue
            _run_one(store, job)
            done += 1
            idle_since = time.monotonic()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    return done


def _run_one(store: Store, job: dict) -> None:
    from .fused import Cancelled

    ctx = _JobContext(store, job["id"])
    try:
        run_id = _execute(store, job, ctx)
        _finish(store, job["id"], "done", "finished", run_id)
    except Cancelled:
        _finish(store, job["id"], "cancelled", "cancelled; finished cells are kept")
    except Exception as exc:  # one job's failure must not take the worker (or the app) down
        message = " ".join(str(exc).split()) or type(exc).__name__
        _finish(store, job["id"], "failed", message, error=traceback.format_exc(limit=8))


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".worker.lock")


def worker_pid(db: str | os.PathLike | None = None) -> int | None:
    """The pid of the live worker of this store, if any."""
    path = _lock_path(Path(db or paths.default_db()).expanduser())
    if not path.exists():
        return None
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            text = lock.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


def ensure_worker(db: str | os.PathLike | None = None) -> int:
    """Start the store's worker process unless one is alive; returns its pid.

    The worker runs ``python -m core worker`` in its own session, so it outlives a browser tab
    and Streamlit's reruns; it exits after ten idle minutes and is started again on demand.
    """
    db_path = Path(db or paths.default_db()).expanduser()
    Store(db_path)  # create or validate the store before a worker touches it
    pid = worker_pid(db_path)
    if pid:
        return pid
    log = open(paths.home() / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "core", "worker", "--db", str(db_path)],
                            cwd=str(paths.PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until it holds the lock (or lost the race to another)
        pid = worker_pid(db_path)
        if pid or proc.poll() is not None:
            return pid or worker_pid(db_path) or proc.pid
        time.sleep(0.05)
    return proc.pid


def stop_worker(db: str | os.PathLike | None = None, sig: int = signal.SIGTERM) -> None:
    pid = worker_pid(db)
    if pid:
        os.kill(pid, sig)
