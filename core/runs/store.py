"""Results as data: runs, their cells and artifacts in one SQLite file.

* Every cell is committed in its own transaction the moment it is known, so a crash loses
  at most the cells in flight, and a run can be resumed from what is stored.
* WAL journaling lets the app read while the worker writes.
* A run is found again by the hash of its configuration, so re-running a finished
  configuration reads the stored result instead of recomputing it.
* A run left ``running`` by a process that is gone (it could not mark its end: the disk was
  full, or it was killed) is marked failed when the store is next opened.

Opening the file, its faults (a full disk, a read-only or damaged file, another program's
database) and the connections are :class:`core.runs.store_file.StoreFile`'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import time
import uuid
from contextlib import suppress

from core.errors import Cancelled, StoreDamaged, StoreError, StoreFull, StoreReadOnly
from core.progress import Status
from core.runs import store_faults
from core.runs.store_file import StoreFile

__all__ = ["Store", "StoreDamaged", "StoreError", "StoreFull", "StoreReadOnly", "config_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    summary TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS runs_by_config ON runs (config_hash, kind);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sender_layer TEXT NOT NULL,
    receiver_layer TEXT NOT NULL,
    status TEXT NOT NULL,
    accuracy REAL,
    details TEXT,
    stitch BLOB,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, sender_layer, receiver_layer)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS run_owners (
    run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process TEXT NOT NULL
);
"""
_FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)


def config_hash(config: dict) -> str:
    """A stable hash of a JSON-able configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Store(StoreFile):
    """A StitchLab results database at ``path`` (created if absent); ``read_only`` and ``notice``
    as :class:`StoreFile`'s."""

    SCHEMA = _SCHEMA

    def _after_open(self) -> None:
        self._repair_orphans()

    def _repair_orphans(self) -> None:
        """Runs left ``running`` by a process of this host that is gone are marked failed: it could
        not mark them itself (a full disk) or was killed. Their stored cells stay."""
        rows = []
        with suppress(StoreError), self.connect() as conn:
            rows = conn.execute("SELECT o.run_id, o.pid, o.process FROM run_owners o JOIN runs r ON r.id = o.run_id "
                                "WHERE r.status = 'running' AND o.host = ?", (store_faults.HOST,)).fetchall()
        orphans = [r for r in rows if not store_faults.process_alive(r["pid"], r["process"])]
        if not orphans:
            return
        with suppress(StoreError), self.transaction() as conn:
            for row in orphans:
                conn.execute("UPDATE runs SET status = 'failed', message = ?, updated = ? WHERE id = ? AND "
                             "status = 'running'", (f"the process computing it (pid {row['pid']}) ended before it "
                                                    f"could mark it finished (a full disk, or it was stopped); its "
                                                    f"stored results are kept: run it again to resume", time.time(),
                                                    row["run_id"]))
                conn.execute("DELETE FROM run_owners WHERE run_id = ?", (row["run_id"],))

    # --- runs ----------------------------------------------------------------------------------
    def create_run(self, kind: str, config: dict, name: str | None = None) -> str:
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self.transaction() as conn:
            conn.execute("INSERT INTO runs (id, kind, name, config_hash, config, status, created, updated) "
                         "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                         (run_id, kind, name, config_hash(config), json.dumps(config, sort_keys=True), now, now))
            _own(conn, run_id)
        return run_id

    def find_run(self, kind: str, config: dict | list[dict], statuses: tuple[str, ...] | None = None) -> dict | None:
        """The newest run of this exact configuration (or of any of a list of them), in one of
        ``statuses`` (None: any), or None. One indexed query, however many runs are stored."""
        hashes = [config_hash(c) for c in (config if isinstance(config, list) else [config])]
        query = (f"SELECT * FROM runs WHERE kind = ? AND config_hash IN ({', '.join('?' * len(hashes))})"
                 + (f" AND status IN ({', '.join('?' * len(statuses))})" if statuses else "")
                 + " ORDER BY created DESC LIMIT 1")
        with self.connect() as conn:
            row = conn.execute(query, (kind, *hashes, *(statuses or ()))).fetchone()
        return _run_dict(row) if row else None

    def import_run(self, kind: str, identity: dict, name: str, cells: list[tuple], summary: dict, seconds: float,
                   message: str) -> str | None:
        """Store a run computed elsewhere, finished, with its cells ``(sender_layer, receiver_layer,
        status, accuracy, details)``, in one transaction: never half written, and two processes
        importing it at once store it once. None (nothing written) when this identity has a run."""
        run_id, now = uuid.uuid4().hex[:12], time.time()
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE kind = ? AND config_hash = ?",
                            (kind, config_hash(identity))).fetchone():
                return None
            conn.execute("INSERT INTO runs (id, kind, name, config_hash, config, status, message, summary, seconds, "
                         "created, updated) VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?)",
                         (run_id, kind, name, config_hash(identity), json.dumps(identity, sort_keys=True), message,
                          json.dumps(summary, sort_keys=True), seconds, now, now))
            conn.executemany("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(run_id, i, j, status, accuracy, json.dumps(details or {}, sort_keys=True), None, now)
                              for i, j, status, accuracy, details in cells])
        return run_id

    def get_run(self, run_id: str) -> dict:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}; list runs with: python -m core runs")
        return _run_dict(row)

    def list_runs(self, kind: str | None = None, limit: int = 500) -> list[dict]:
        """The newest ``limit`` runs, for listings; to find a run, use :meth:`find_run`."""
        with self.connect() as conn:
            if kind:
                rows = conn.execute("SELECT * FROM runs WHERE kind = ? ORDER BY created DESC LIMIT ?", (kind, limit))
            else:
                rows = conn.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,))
            return [_run_dict(r) for r in rows.fetchall()]

    def update_run(self, run_id: str, **fields) -> bool:
        """Change a run's fields; False when there is no such run (deleted meanwhile)."""
        allowed = {"status", "message", "summary", "seconds", "name"}
        bad = set(fields) - allowed
        if bad:
            raise AssertionError(f"cannot update run fields {bad}")
        if "summary" in fields and not isinstance(fields["summary"], (str, type(None))):
            fields["summary"] = json.dumps(fields["summary"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in fields) + ", updated = ?"
        with self.transaction() as conn:
            found = conn.execute(f"UPDATE runs SET {sets} WHERE id = ?",
                                 (*fields.values(), time.time(), run_id)).rowcount > 0
            if found and fields.get("status") == Status.RUNNING:
                _own(conn, run_id)
            elif fields.get("status") in _FINAL:
                conn.execute("DELETE FROM run_owners WHERE run_id = ?", (run_id,))
        return found

    def rename_run(self, run_id: str, name: str) -> None:
        self.get_run(run_id)
        self.update_run(run_id, name=name.strip() or None)

    def delete_run(self, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # --- cells ---------------------------------------------------------------------------------
    def put_cell(self, run_id: str, sender_layer: str, receiver_layer: str, status: str,
                 accuracy: float | None = None, details: dict | None = None, stitch: bytes | None = None) -> None:
        """Commit one cell (its own transaction): status is done, not_stitchable or failed. A run
        deleted while it is computed raises :class:`Cancelled`: its computation has no place to go."""
        with self.transaction() as conn:
            _check_exists(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, sender_layer, receiver_layer, status, accuracy,
                          json.dumps(details or {}, sort_keys=True), stitch, time.time()))
            conn.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), run_id))

    def cells(self, run_id: str, with_details: bool = True) -> list[dict]:
        columns = "sender_layer, receiver_layer, status, accuracy" + (", details" if with_details else "")
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {columns} FROM cells WHERE run_id = ? ORDER BY created", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            if with_details:
                d["details"] = json.loads(d["details"] or "{}")
            out.append(d)
        return out

    def cell_counts(self, run_ids: list[str]) -> dict[str, int]:
        """How many cells each of ``run_ids`` has stored (one query, for listings; none: absent)."""
        with self.connect() as conn:
            return dict(conn.execute(f"SELECT run_id, COUNT(*) FROM cells WHERE run_id IN "
                                     f"({', '.join('?' * len(run_ids))}) GROUP BY run_id", run_ids).fetchall())

    def cell_stitch(self, run_id: str, sender_layer: str, receiver_layer: str) -> bytes | None:
        with self.connect() as conn:
            row = conn.execute("SELECT stitch FROM cells WHERE run_id = ? AND sender_layer = ? AND receiver_layer = ?",
                               (run_id, sender_layer, receiver_layer)).fetchone()
        if row is None:
            raise KeyError(f"run {run_id} has no cell {sender_layer} -> {receiver_layer}")
        return row[0]

    # --- artifacts -----------------------------------------------------------------------------
    def put_artifact(self, run_id: str, key: str, value) -> None:
        blob = value if isinstance(value, (bytes, bytearray)) else json.dumps(value).encode()
        with self.transaction() as conn:
            _check_exists(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (run_id, key, blob))

    def get_artifact(self, run_id: str, key: str, default=None, as_json: bool = True):
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM artifacts WHERE run_id = ? AND key = ?", (run_id, key)).fetchone()
        if row is None:
            return default
        return json.loads(row[0]) if as_json else row[0]


def _own(conn: sqlite3.Connection, run_id: str) -> None:
    """This process computes ``run_id``: if it ends without marking the run, the next open will."""
    conn.execute("INSERT OR REPLACE INTO run_owners VALUES (?, ?, ?, ?)",
                 (run_id, store_faults.HOST, os.getpid(), _this_process(os.getpid())))


@functools.lru_cache(maxsize=4)
def _this_process(pid: int) -> str:  # keyed by pid: a forked child is another process
    return store_faults.process_identity(pid)


def _check_exists(conn: sqlite3.Connection, run_id: str) -> None:
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise Cancelled(f"run {run_id} was deleted while it was being computed; nothing more is stored for it")


def _run_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
    return d

