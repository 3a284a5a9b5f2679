"""Results as data: runs, their cells and artifacts in one SQLite file.

* Every cell is committed in its own transaction the moment it is known, so a crash loses
  at most the cells in flight, and a run can be resumed from what is stored.
* WAL journaling lets the app read while the worker writes.
* A run is found again by the hash of its configuration, so re-running a finished
  configuration reads the stored result instead of recomputing it.
* A file that is not a StitchLab database (another program's, or not SQLite at all) is reported
  and never overwritten.

Faults (words for them in :mod:`core.runs.store_faults`):

* A full disk or a read-only store stays readable; a write raises :class:`StoreFull` or
  :class:`StoreReadOnly` in one line, and :attr:`Store.notice` says so from the open on.
* A damaged store is found by ``PRAGMA quick_check`` when a process first opens the file (the
  app and the worker once per start, a CLI command once; a read that blocks no writer), or by
  the first statement that meets a malformed page. The check reads the whole file: a store of
  300 grids is 1 GB, checked in 0.3-0.7 s from the page cache and 2.3-3.9 s from disk on two
  busy CPU cores (``python -m bench.store_check``); once per process, not on every open. A
  damaged store is moved aside to ``NAME.damaged-<time>`` (never over another file), a new
  store is started, and ``python -m core store recover`` copies what is readable out of it.
* A run left ``running`` by a process that is gone (it could not mark its end: the disk was
  full, or it was killed) is marked failed when the store is next opened.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from core import paths
from core.errors import Cancelled, StoreDamaged, StoreError, StoreFull, StoreReadOnly
from core.progress import Status
from core.runs import store_faults

__all__ = ["Store", "StoreDamaged", "StoreError", "StoreFull", "StoreReadOnly", "config_hash"]

SCHEMA_VERSION = 1
APP_ID = "stitchlab"

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
_ADDED_SCHEMAS: list[str] = []  # other modules' tables (the queue's...): made again in a new file
_CHECKED: set[tuple] = set()  # (path, device, inode) of the files this process found whole
_FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)
_log = logging.getLogger(__name__)


def config_hash(config: dict) -> str:
    """A stable hash of a JSON-able configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Store:
    """A StitchLab results database at ``path`` (created if absent).

    ``read_only``: nothing can be written (the file, its folder or its disk); what is stored is
    read as usual. ``notice``: one line for the user about the state the store was opened in (read
    only, a full disk, a damaged file moved aside), or None."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path or paths.default_db()).expanduser()
        self.read_only = False
        self.notice: str | None = None
        self._read_uri: str | None = None  # where reads go when a normal connection cannot read
        self._file: tuple | None = None  # (device, inode) of the file opened: another process may move it
        self._opener: int | None = None  # the thread opening the file (the app's store is shared by sessions)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot make the folder {self.path.parent} for the store ({exc.strerror}); choose "
                             f"another file with STITCHLAB_DB or --db") from None
        self._open()

    # --- connection ----------------------------------------------------------------------------
    @contextmanager
    def connect(self, write: bool = False):
        """A connection in autocommit-off mode; commits on success, rolls back on error. ``write``:
        for a transaction (a read goes in read-only where only that can read). A full disk, a
        read-only store or a damaged file raise :class:`StoreError` subclasses in words."""
        if write and self.read_only:
            raise StoreReadOnly(self._message("read-only"))
        self._follow_the_file()
        try:
            conn = self._connection(write)
        except sqlite3.DatabaseError as exc:
            raise self._fault(exc) or exc from None
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            raise fault from None
        finally:
            conn.close()

    @contextmanager
    def transaction(self):
        with self.connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # SQLite may have rolled back already (a full disk): no second error over the first
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add_tables(self, schema: str) -> None:
        """Create a module's own tables (``CREATE ... IF NOT EXISTS`` statements) in this store;
        a new file started in place of a damaged one gets them again."""
        if schema not in _ADDED_SCHEMAS:
            _ADDED_SCHEMAS.append(schema)
        with self.transaction() as conn:
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)

    def _sqlite(self, uri: str | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(uri or self.path, uri=uri is not None, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self, write: bool) -> sqlite3.Connection:
        """A normal connection; for reading, a read-only one where a normal one cannot read (a
        read-only file system, or a full disk that has no room for SQLite's shared-memory file)."""
        if write:
            return self._sqlite()
        if self.read_only and self._read_uri:
            return self._sqlite(self._read_uri)
        conn = self._sqlite()
        try:
            conn.execute("PRAGMA schema_version").fetchone()  # a read: tells here whether the file can be read
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if store_faults.classify(exc, self.path) not in ("full", "read-only"):
                raise
        return self._sqlite(self._reader_uri())

    def _reader_uri(self) -> str:
        """The first read-only way to open the file that reads it. Without the shared-memory file
        only an immutable connection reads; then nobody can be writing (a writer needs that file)."""
        error = None
        for immutable in (False, True):
            uri = store_faults.read_uri(self.path, immutable)
            try:
                conn = self._sqlite(uri)
                try:
                    conn.execute("PRAGMA schema_version").fetchone()
                finally:
                    conn.close()
                return uri
            except sqlite3.OperationalError as exc:
                error = exc
        raise error

    def _message(self, fault: str, detail: str = "") -> str:
        if fault == "full":
            return (f"the disk holding {self.path} is full: nothing new can be saved (what is stored is kept and "
                    f"can be read). Free some space, then run it again")
        if fault == "read-only":
            return (f"{self.path} is read-only (its file, folder or disk cannot be written): stored results can be "
                    f"read, nothing new saved. Make it writable, or use another store file (STITCHLAB_DB)")
        return (f"{self.path} is damaged ({detail}); copy what is readable into a new store with: "
                f"python -m core store recover {self.path}")

    def _fault(self, exc: sqlite3.Error) -> StoreError | None:
        """The error to raise for ``exc``: a full disk, a read-only store or a damaged file in
        words, or None (a bug or a busy store: raised as it is). A damaged file found while the
        store is in use is moved aside at once (:meth:`_set_aside`)."""
        fault = store_faults.classify(exc, self.path)
        if fault is None:
            return None
        if fault == "read-only":
            return StoreReadOnly(self._message(fault))
        if fault == "full":
            return StoreFull(self._message(fault))
        detail = " ".join(str(exc).split())
        if self._opening:
            return StoreDamaged(detail)
        if self._whole():  # one statement's trouble, not the file's: say so, touch nothing
            return StoreDamaged(self._message(fault, detail))
        _CHECKED.discard((str(self.path), *(_file_id(self.path) or ())))
        try:
            with self._lock:
                self._open()  # finds the damage again, moves the file aside and starts a new store
        except StoreError as refused:
            return refused
        return StoreDamaged(self.notice or self._message(fault, detail))

    def _whole(self) -> bool:
        try:
            with self._read_connection() as conn:
                return [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()] == ["ok"]
        except sqlite3.Error:
            return False

    @contextmanager
    def _read_connection(self):
        conn = self._connection(write=False)
        try:
            yield conn
        finally:
            conn.close()

    @property
    def _opening(self) -> bool:
        return self._opener == threading.get_ident()

    def _follow_the_file(self) -> None:
        """Another process may have moved a damaged file aside and started a new one: open that."""
        if self._opening or self._file is None or _file_id(self.path) == self._file:
            return
        with self._lock:
            if _file_id(self.path) != self._file:  # not opened meanwhile by another thread
                self._open()

    # --- opening -------------------------------------------------------------------------------
    def _open(self, moved_from: str | None = None) -> None:
        """Check the file and make the tables; a read-only or full store is opened for reading, a
        damaged one moved aside (then a new store is started in its place)."""
        try:
            existed = self.path.stat().st_size > 0
        except FileNotFoundError:
            existed = False
        if existed:
            store_faults.check_header(self.path)
        outer, self._opener = self._opener, threading.get_ident()
        self.read_only, self._read_uri, self.notice = False, None, None
        try:
            try:
                self._check_whole()
                self._init()
            except StoreReadOnly:
                if not existed:
                    raise StoreReadOnly(f"cannot make the store {self.path}: its folder is read-only; use another "
                                        f"store file (STITCHLAB_DB)") from None
                self.read_only = True
                self._open_for_reading("read-only")
            except StoreFull:
                if not existed:
                    raise StoreFull(f"the disk holding {self.path} is full: the store cannot be made. Free some "
                                    f"space, or use another store file (STITCHLAB_DB)") from None
                self._open_for_reading("full")
        except StoreDamaged as exc:
            if moved_from is not None:
                raise StoreDamaged(self._message("damaged", str(exc))) from None
            self._opener = outer
            self._set_aside(str(exc))
            return
        finally:
            self._opener = outer
        self._file = _file_id(self.path)
        if not self.read_only:
            self._repair_orphans()

    def _check_whole(self) -> None:
        """PRAGMA quick_check, once per process and file (it reads the whole file)."""
        key = (str(self.path), *(_file_id(self.path) or ()))
        if key in _CHECKED:
            return
        with self.connect() as conn:
            found = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if found != ["ok"]:
            raise StoreDamaged(f"{found[0]}" + (f", and {len(found) - 1} more problems" if len(found) > 1 else ""))
        _CHECKED.add((str(self.path), *(_file_id(self.path) or ())))

    def _init(self) -> None:
        # One IMMEDIATE transaction for the check, the tables and the meta rows: processes
        # opening a new store at once (the app and its worker) see it either empty or whole.
        with self.transaction() as conn:
            self._check_identity(conn)
            for statement in filter(str.strip, ";".join([_SCHEMA, *_ADDED_SCHEMAS]).split(";")):
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?)", (APP_ID,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            if conn.execute("PRAGMA application_id").fetchone()[0] != store_faults.APP_NUMBER:
                conn.execute(f"PRAGMA application_id = {store_faults.APP_NUMBER}")
        self._use_wal()

    def _check_identity(self, conn: sqlite3.Connection, reading: bool = False) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(f"{self.path} is another program's SQLite database (tables: "
                             f"{', '.join(sorted(tables)[:5])}); StitchLab will not touch it. "
                             f"Choose another file with STITCHLAB_DB or --db")
        if reading and not tables:
            raise StoreError(f"{self.path} holds no StitchLab store, and cannot be written to make one; use another "
                             f"store file (STITCHLAB_DB)")
        if "meta" in tables:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("app") != APP_ID or "schema" not in meta:
                raise StoreError(f"{self.path} is not a StitchLab database; choose another file "
                                 f"with STITCHLAB_DB or --db")
            if int(meta["schema"]) > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer StitchLab (schema {meta['schema']}); "
                                 f"upgrade StitchLab or use another file")

    def _open_for_reading(self, fault: str) -> None:
        """A store that cannot be written now: find a connection that reads it (a read-only file
        system left without SQLite's shared-memory file reads only as immutable), check it."""
        try:
            with self._read_connection() as conn:
                conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError:
            try:
                self._read_uri = self._reader_uri()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path} cannot be read ({exc}); it was left as it is. Use another store "
                                 f"file (STITCHLAB_DB)") from None
        self._check_whole()
        with self.connect() as conn:
            self._check_identity(conn, reading=True)
        self.notice = self._message(fault)

    def _set_aside(self, detail: str) -> None:
        """Move a damaged store aside (:func:`store_faults.set_aside`) and start a new one here."""
        if not store_faults.is_ours(self.path):
            raise StoreError(f"{self.path} is a damaged SQLite database ({detail}) that StitchLab cannot tell for its "
                             f"own; it was left as it is. Use another store file (STITCHLAB_DB), or copy what is "
                             f"readable with: python -m core store recover {self.path}")
        try:
            moved = store_faults.set_aside(self.path)
        except OSError as exc:
            raise StoreDamaged(f"{self._message('damaged', detail)}; it could not be moved aside ({exc.strerror})") \
                from None
        self._open(moved_from=str(moved))
        self.notice = (f"{self.path} was damaged ({detail}); it was moved to {moved} and a new, empty store was "
                       f"started. Copy what is readable from it with: python -m core store recover {moved}")
        _log.warning(self.notice)  # whatever the command: on stderr when nothing else takes the log

    def _use_wal(self, seconds: float = 30.0) -> None:
        """Switch the file to write-ahead logging (once; it persists). The switch needs the file to
        itself and SQLite answers 'locked' at once, without its busy wait, while another process
        reads it, so it is retried here."""
        deadline = time.monotonic() + seconds
        with self.connect() as conn:
            while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

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


def _file_id(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


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

