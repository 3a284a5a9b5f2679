"""One StitchLab SQLite file: opened, checked, read where it can be, a damaged one moved aside.

:class:`StoreFile` is what every store shares whatever its tables: connections and transactions,
the file's identity (another program's database is never touched), write-ahead logging, and its
faults (words for them in :mod:`core.runs.store_faults`):

* A full disk or a read-only store stays readable; a write raises :class:`StoreFull` or
  :class:`StoreReadOnly` in one line, and :attr:`StoreFile.notice` says so from the open on.
* A damaged store is found by ``PRAGMA quick_check`` when a process first opens the file (the
  app and the worker once per start, a CLI command once; a read that blocks no writer), or by
  the first statement that meets a malformed page. The check reads the whole file: a store of
  300 grids is 1 GB, checked in 0.3-0.7 s from the page cache and 2.3-3.9 s from disk on two
  busy CPU cores (``python -m bench.store_check``); once per process, not on every open. A
  damaged store is moved aside to ``NAME.damaged-<time>`` (never over another file), a new
  store is started, and ``python -m core store recover`` copies what is readable out of it.

:class:`core.runs.store.Store` adds the results' tables and what is read and written in them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from core import paths
from core.errors import StoreDamaged, StoreError, StoreFull, StoreReadOnly
from core.runs import store_faults

__all__ = ["StoreFile", "SCHEMA_VERSION", "APP_ID"]

SCHEMA_VERSION = 1
APP_ID = "stitchlab"

_ADDED_SCHEMAS: list[str] = []  # other modules' tables (the queue's...): made again in a new file
_CHECKED: set[tuple] = set()  # (path, device, inode) of the files this process found whole
_log = logging.getLogger("core.runs.store")


class StoreFile:
    """A StitchLab SQLite file at ``path`` (created if absent), with the tables of ``SCHEMA``.

    ``read_only``: nothing can be written (the file, its folder or its disk); what is stored is
    read as usual. ``notice``: one line for the user about the state the store was opened in (read
    only, a full disk, a damaged file moved aside), or None."""

    # ``CREATE ... IF NOT EXISTS`` statements, with a ``meta (key, value)`` table: a subclass's tables.
    SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

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
            self._after_open()

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
            for statement in filter(str.strip, ";".join([self.SCHEMA, *_ADDED_SCHEMAS]).split(";")):
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

    def _after_open(self) -> None:
        """What a writable store does once opened (a subclass's repairs); nothing here."""


def _file_id(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
