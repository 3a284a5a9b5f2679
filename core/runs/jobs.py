"""Background jobs: a queue in the store's SQLite file, and one worker process that runs it.

The dashboard never computes inline (Streamlit reruns the script on every click): pages go
through :mod:`core.runs.service`, which queues work here. One worker process per store claims queued
jobs in order (one GPU, one job at a time), reports progress and an ETA into the job's row,
checks the job's cancel flag before every unit of work, and commits results to the store as
they come.

Why a process and a SQLite queue rather than a thread: a worker killed mid-grid (even by
SIGKILL) loses only the cell in flight; the next worker finds the job still marked
``running`` under a dead pid, puts it back in the queue, and the grid resumes from the cells
already stored. Every browser session, and every app process, shares the one queue.

A job is of a kind registered in :mod:`core.runs.service` (grid, cka, attributions, stitch-cka) and
holds a list of that kind's configurations, each under its identity key in ``job_keys``: a
configuration already queued or running is never queued twice (:func:`submit` checks and
queues in one transaction).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.errors import Cancelled, QueueFull, StoreError
from core.progress import Progress, Status
from core.runs import store_faults
from core.runs.store import Store

__all__ = ["submit", "get", "cancel", "computing", "list_jobs", "run_worker", "ensure_worker", "worker_pid", "recover",
           "QueueFull", "Queued", "max_queue", "max_attempts", "ACTIVE"]

ACTIVE = Status.active()
_PROGRESS_INTERVAL = 0.25  # seconds between progress writes: enough for a live bar, cheap for SQLite

# The jobs module owns these tables; they live in the store's file so that one SQLite file is
# everything (results and the queue) and a job's results and its row commit alike.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    owner TEXT,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT,
    eta REAL,
    run_id TEXT,
    error TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS job_keys (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX IF NOT EXISTS job_keys_by_key ON job_keys (key);
"""
_READY: set[str] = set()


def _tables(store: Store) -> Store:
    """The store, with the queue's tables created (once per store file and process). A read-only
    store is read as it is; writing to its queue is refused in words (:class:`StoreReadOnly`)."""
    if str(store.path) not in _READY and not store.read_only:
        store.add_tables(_SCHEMA)
        with store.transaction() as conn:  # a queue made before jobs counted their attempts
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            if "attempts" not in columns:
                conn.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        _READY.add(str(store.path))
    return store


def max_attempts() -> int:
    """How many workers a job may take down before it is failed (``STITCHLAB_JOB_ATTEMPTS``,
    default 3): a job that kills its worker (out of memory) must not block the queue for ever."""
    return max(1, int(os.environ.get("STITCHLAB_JOB_ATTEMPTS", "3")))


_HEARTBEAT_EVERY = 5.0  # seconds between a running job's heartbeats (a thread of the worker)
_STALE_AFTER = 120.0  # a running job without a heartbeat for this long has a frozen worker


def max_queue() -> int:
    """Most jobs that may wait at once (``STITCHLAB_MAX_QUEUE``, default 32)."""
    return int(os.environ.get("STITCHLAB_MAX_QUEUE", "32"))


# --- the client side: what pages call ----------------------------------------------------------
@dataclass
class Queued:
    """What :func:`submit` did: the job it queued (None if every configuration was queued or
    running already) and the active jobs that already hold some of them (``following``)."""

    job_id: int | None
    following: list[int] = field(default_factory=list)

    @property
    def job_ids(self) -> list[int]:
        return ([self.job_id] if self.job_id is not None else []) + self.following


def submit(store: Store, kind: str, configs: list[dict], keys: list[str], options: dict | None = None,
           owner: str | None = None) -> Queued:
    """Queue one job of ``kind`` for the ``configs`` whose identity ``keys`` no queued or running
    job holds; the check and the insert are one transaction, so two clicks (or two sessions)
    never queue the same work twice. ``options`` (device, name) apply to the whole job.
    Raises :class:`QueueFull` when the queue is at its bound."""
    if len(configs) != len(keys):
        raise AssertionError("one identity key per configuration")
    with _tables(store).transaction() as conn:
        marks = ", ".join("?" * len(keys))
        held = conn.execute(f"SELECT k.key, k.job_id FROM job_keys k JOIN jobs j ON j.id = k.job_id "
                            f"WHERE k.key IN ({marks}) AND j.status IN ('queued', 'running')", keys).fetchall()
        holder = {row["key"]: row["job_id"] for row in held}
        following = sorted(set(holder.values()))
        todo = [(config, key) for config, key in zip(configs, keys) if key not in holder]
        if not todo:
            return Queued(None, following)
        waiting = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
        if waiting >= max_queue():
            raise QueueFull(f"the job queue is full ({waiting} jobs waiting, limit {max_queue()}); "
                            f"wait for some to finish or cancel yours (STITCHLAB_MAX_QUEUE raises the limit)")
        params = {**(options or {}), "configs": [config for config, _ in todo]}
        cur = conn.execute("INSERT INTO jobs (kind, params, owner, status, message, created) "
                           "VALUES (?, ?, ?, 'queued', 'waiting for the worker', ?)",
                           (kind, json.dumps(params, sort_keys=True), owner, time.time()))
        job_id = int(cur.lastrowid)
        conn.executemany("INSERT OR IGNORE INTO job_keys VALUES (?, ?)", [(job_id, key) for _, key in todo])
        return Queued(job_id, following)


def get(store: Store, job_id: int) -> dict:
    with _tables(store).connect() as conn:
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
    with _tables(store).connect() as conn:
        rows = conn.execute(query, (*args, limit)).fetchall()
    return [{**dict(r), "params": json.loads(r["params"])} for r in rows]


def cancel(store: Store, job_id: int) -> None:
    """Ask a job to stop: a queued job is cancelled at once, a running one before its next unit
    of work (training step, scoring batch, least-squares batch, CKA batch)."""
    with _tables(store).transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'cancelled', message = 'cancelled before it started', "
                     "finished = ? WHERE id = ? AND status = 'queued'", (time.time(), job_id))
        conn.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND status = 'running'", (job_id,))


def computing(store: Store, run_id: str) -> int | None:
    """The running job whose worker is computing ``run_id`` (the store records which process
    computes a run; a worker runs one job at a time), or None."""
    with _tables(store).connect() as conn:
        row = conn.execute("SELECT j.id FROM jobs j JOIN run_owners o ON o.pid = j.worker_pid WHERE o.run_id = ? "
                           "AND o.host = ? AND j.status = 'running' ORDER BY j.id DESC LIMIT 1",
                           (run_id, store_faults.HOST)).fetchone()
    return row[0] if row else None


# --- the worker side ---------------------------------------------------------------------------
class _JobContext:
    """Progress and cancel plumbing for one running job."""

    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self._last_progress = 0.0
        self._cancelled = False

    def progress(self, event: Progress) -> None:
        """Write the event to the job's row (rate-limited: SQLite is not a message bus)."""
        now = time.monotonic()
        if now - self._last_progress < _PROGRESS_INTERVAL and event.fraction < 1.0:
            return
        self._last_progress = now
        with self.store.transaction() as conn:
            conn.execute("UPDATE jobs SET progress = ?, message = ?, eta = ?, heartbeat = ?, "
                         "run_id = COALESCE(?, run_id) WHERE id = ?",
                         (float(event.fraction), event.message, event.eta, time.time(), event.run_id, self.job_id))

    def cancelled(self) -> bool:
        """Asked before every unit of work, so not rate-limited: one indexed read (well under a
        millisecond) against a training step of tens of milliseconds at least."""
        if not self._cancelled:
            with self.store.connect() as conn:
                row = conn.execute("SELECT cancel FROM jobs WHERE id = ?", (self.job_id,)).fetchone()
            self._cancelled = bool(row and row[0])
        return self._cancelled


def recover(store: Store, serving_pid: int | None = None) -> list[int]:
    """Jobs left ``running`` by a worker that is gone go back to the queue, or fail after
    :func:`max_attempts` workers died on them; returns their ids.

    A worker is alive while it holds the store's lock file (the kernel drops the lock of a
    process that dies, however it dies, so a recycled pid cannot pass for it). ``serving_pid``:
    the worker calling this (it holds the lock; any other pid's running job is an orphan).
    A running job whose live worker sent no heartbeat for two minutes is failed (a frozen worker)."""
    holder = serving_pid or worker_pid(store.path)
    now, moved = time.time(), []
    with _tables(store).transaction() as conn:
        for row in conn.execute("SELECT id, worker_pid, heartbeat, attempts FROM jobs WHERE status = 'running'"):
            mine = holder is not None and row["worker_pid"] == holder
            if mine and now - (row["heartbeat"] or now) < _STALE_AFTER:
                continue
            if mine:
                why = (f"the worker (pid {holder}) sent no heartbeat for {now - row['heartbeat']:.0f} s; restart the "
                       f"app (or end that process) and run it again")
                conn.execute("UPDATE jobs SET status = 'failed', message = ?, finished = ? WHERE id = ?",
                             (why, now, row["id"]))
            elif row["attempts"] >= max_attempts():
                why = (f"the worker stopped while running this job {row['attempts']} times (killed, or out of "
                       f"memory?); it is not tried again: fewer layers or images may fit")
                conn.execute("UPDATE jobs SET status = 'failed', message = ?, finished = ? WHERE id = ?",
                             (why, now, row["id"]))
            else:
                conn.execute("UPDATE jobs SET status = 'queued', worker_pid = NULL, message = 'the worker stopped; "
                             "resuming from the stored results' WHERE id = ?", (row["id"],))
            moved.append(row["id"])
    return moved


def _claim(store: Store) -> dict | None:
    """The oldest queued job, now marked running; None when there is none, or when the store
    cannot be written (a full disk: nothing can run until there is space)."""
    try:
        return _claim_oldest(store)
    except StoreError:
        return None


def _claim_oldest(store: Store) -> dict | None:
    with store.transaction() as conn:
        row = conn.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        conn.execute("UPDATE jobs SET status = 'running', worker_pid = ?, started = ?, heartbeat = ?, "
                     "attempts = attempts + 1, message = 'starting' WHERE id = ?",
                     (os.getpid(), time.time(), time.time(), row["id"]))
    job = dict(row)
    job["params"] = json.loads(job["params"])
    return job


def _finish(store: Store, job_id: int, status: str, message: str | None, run_id: str | None = None,
            error: str | None = None) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = ?, message = ?, error = ?, finished = ?, progress = CASE WHEN ? = "
                     "'done' THEN 1.0 ELSE progress END, run_id = COALESCE(?, run_id), eta = NULL WHERE id = ?",
                     (status, message, error, time.time(), status, run_id, job_id))


# (store, kind, configs, options, progress, cancel) -> the run id the job produced
Execute = Callable[[Store, str, list, dict, Callable[[Progress], None], Callable[[], bool]], "str | None"]


def run_worker(execute: Execute, db: str | os.PathLike | None = None, poll: float = 0.5,
               idle_exit: float | None = 600.0, max_jobs: int | None = None) -> int:
    """Serve the queue of the store at ``db`` until idle for ``idle_exit`` seconds; returns jobs run.

    ``execute`` runs one job (:func:`core.runs.service.execute`: this queue knows no kinds). Only one
    worker serves a store: a second one exits at once (an exclusive lock file).
    """
    store = _tables(Store(db))
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
    done, idle_since, unwritten = 0, time.monotonic(), None
    try:
        recover(store, serving_pid=os.getpid())
        while max_jobs is None or done < max_jobs:
            # A job's end the store refused (a full disk) is written before any new job is claimed.
            if unwritten is not None and unwritten.write(store):
                unwritten = None
            job = _claim(store) if unwritten is None else None
            if job is None:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                time.sleep(poll)
                continue
            unwritten = _run_one(store, job, execute)
            done += 1
            idle_since = time.monotonic()
        if unwritten is not None:
            unwritten.write(store)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    return done


def _heartbeat(store: Store, job_id: int, stop: threading.Event) -> None:
    """Tell the queue this worker is alive while a job runs, also through a long silent step."""
    while not stop.wait(_HEARTBEAT_EVERY):
        try:
            with store.transaction() as conn:
                conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), job_id))
        except Exception:  # noqa: BLE001 - a busy or full disk: the job's own writes will say so
            pass


@dataclass
class _End:
    """How a job ended, with the run marks its computation could not write (a full disk)."""

    job_id: int
    status: Status
    message: str
    run_id: str | None = None
    error: str | None = None
    unmarked: list = field(default_factory=list)

    def write(self, store: Store) -> bool:
        """Write it; False when the store still refuses (it is then tried again)."""
        try:
            for run_id, status, message in self.unmarked:
                store.update_run(run_id, status=status, message=message)
            self.unmarked = []
            _finish(store, self.job_id, self.status, self.message, self.run_id, self.error)
        except StoreError:
            return False
        return True


def _run_one(store: Store, job: dict, execute: Execute) -> _End | None:
    """Run one job and write how it ended; returns that end when the store refused to write it."""
    ctx = _JobContext(store, job["id"])
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, job["id"], stop), daemon=True)
    beat.start()
    try:
        options = dict(job["params"])
        configs = options.pop("configs")
        end = _End(job["id"], Status.DONE, "finished",
                   execute(store, job["kind"], configs, options, ctx.progress, ctx.cancelled))
    except Cancelled as exc:  # by the user, or a run deleted while it was computed (the reason says)
        end = _End(job["id"], Status.CANCELLED, str(exc) or "cancelled; finished results are kept")
    except Exception as exc:  # one job's failure must not take the worker (or the app) down
        end = _End(job["id"], Status.FAILED, " ".join(str(exc).split()) or type(exc).__name__,
                   error=traceback.format_exc(limit=8), unmarked=getattr(exc, "unmarked", []))
    finally:
        stop.set()
        beat.join()
    return None if end.write(store) else end


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
    """Start the store's worker process unless one is alive; returns its pid. Jobs a dead worker
    left ``running`` are recovered first (:func:`recover`), so following a job is enough to get
    it going again: no new submission is needed.

    The worker runs ``python -m core worker`` in its own session, so it outlives a browser tab
    and Streamlit's reruns; it exits after ten idle minutes and is started again on demand.
    """
    db_path = Path(db or paths.default_db()).expanduser()
    store = _tables(Store(db_path))  # create or validate the store before a worker touches it
    pid = worker_pid(db_path)
    if pid:
        recover(store)  # only a frozen worker's job (its heartbeat stale) is touched
        return pid
    recover(store)
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

