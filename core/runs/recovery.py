"""Copying what is readable out of a damaged store into a new one (``python -m core store recover``).

The damaged file is opened read-only (SQLite's ``mode=ro``) and never changed. Each table of
results (runs, cells, artifacts) is read in rowid order; where a page cannot be read, reading
resumes at the first row after it that can be, so a bad page costs the rows on it and no more.
A row is copied only when it is whole: a run whose configuration is not JSON, a cell whose run
was not copied, are skipped. Rows the table's index still lists but that could not be read are
counted as unreadable; where the index is damaged too, the rowids stepped over bound the count
("up to"). The queue and the cached reference scores are not copied (both are made
again as needed).

The new store is written under a temporary name and given its name only when complete, never
over an existing file.

    >>> recover(Path("stitchlab.sqlite3.damaged-20270101-120000")).summary()
    'recovered 12 runs, 530 cells and 3 artifacts ... (unreadable, skipped: 1 run and 10 cells) ...'
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import StoreError
from core.progress import Status
from core.runs import store_faults
from core.runs.store import Store

__all__ = ["Recovered", "recover"]

_TABLES = {  # table -> its columns, in the order of the store's schema
    "runs": "id, kind, name, config_hash, config, status, message, summary, created, updated, seconds",
    "cells": "run_id, sender_layer, receiver_layer, status, accuracy, details, stitch, created",
    "artifacts": "run_id, key, value",
}
_BATCH = 200  # rows per write transaction: a store's cells carry stitch weights (tens of kB each)
_LAST_ROWID = 2**63 - 1


@dataclass
class Recovered:
    """What :func:`recover` copied (rows per table) and what it skipped as unreadable
    (``bounded``: the tables whose count is an upper bound)."""

    source: Path
    target: Path
    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TABLES, 0))
    unreadable: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TABLES, 0))
    bounded: set[str] = field(default_factory=set)

    def summary(self) -> str:
        skipped = _count_words(self.unreadable, bounded=self.bounded)
        return (f"recovered {_count_words(self.copied, all_tables=True)} from {self.source} into {self.target}"
                + (f" (unreadable, skipped: {skipped})" if skipped else "")
                + f"; {self.source} was not changed. Use the new store with STITCHLAB_DB={self.target} or "
                  f"--db {self.target}")


def _count_words(counts: dict[str, int], all_tables: bool = False, bounded: set = frozenset()) -> str:
    words = [f"{'up to ' if table in bounded else ''}{n} {table if n != 1 else table[:-1]}"
             for table, n in counts.items() if n or all_tables]
    return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1] if words else ""


def recover(source: Path, target: Path | None = None) -> Recovered:
    """Copy every readable run, cell and artifact of the store at ``source`` into a new store at
    ``target`` (default: ``NAME.recovered-<time>`` beside ``source``; never an existing file)."""
    source = Path(source)
    if not source.is_file():
        raise StoreError(f"{source} is not a file; give the path of the damaged store (a store set aside is "
                         f"named NAME.damaged-<time>, beside the store)")
    store_faults.check_header(source)
    target = Path(target) if target is not None else _default_target(source)
    if target.exists():
        raise StoreError(f"{target} exists; recover writes a new store only: give --to a path that does not exist")
    conn = _open_read_only(source)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    done = Recovered(source, target)
    try:
        new = Store(partial)
        runs = set()
        for table, check in (("runs", _whole_run), ("cells", _whole_cell), ("artifacts", _whole_artifact)):
            rows = _Readable(conn, table)
            batch = []
            for row in rows:
                values = check(row, runs)
                if values is None:
                    done.unreadable[table] += 1
                    continue
                batch.append(values)
                if table == "runs":
                    runs.add(values[0])
                if len(batch) >= _BATCH:
                    done.copied[table] += _insert(new, table, batch)
            done.copied[table] += _insert(new, table, batch)
            if rows.index_whole:
                done.unreadable[table] += len(rows.indexed - rows.read)
            elif rows.stepped_over:
                done.unreadable[table] += max(len(rows.indexed - rows.read), rows.stepped_over)
                done.bounded.add(table)
        os.link(partial, target)  # fails on an existing name: a file made meanwhile is not overwritten
    finally:
        conn.close()
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
    return done


def _default_target(source: Path) -> Path:
    base = Path(source.name.split(".damaged-")[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        target = source.with_name(f"{base.stem}.recovered-{stamp}{f'-{n}' if n > 1 else ''}{base.suffix}")
        if not target.exists():
            return target
    raise StoreError(f"no free name beside {source} for the recovered store; give one with --to")  # pragma: no cover


def _open_read_only(source: Path) -> sqlite3.Connection:
    """A read-only connection that can list the tables, or a StoreError saying nothing is readable."""
    error = None
    for immutable in store_faults.quiet_read_order(source):
        conn = sqlite3.connect(store_faults.read_uri(source, immutable), uri=True)
        conn.row_factory = sqlite3.Row
        try:
            # A file shorter than its header says (cut at the tail) is refused whole otherwise; on
            # a read-only connection this only relaxes that check, nothing can be written.
            conn.execute("PRAGMA writable_schema = ON")
            conn.execute("SELECT name FROM sqlite_master").fetchall()
            return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            error = exc
    raise StoreError(f"nothing in {source} can be read ({error}): the page that lists its tables is damaged")


class _Readable:
    """The readable rows of one table, in rowid order, stepping past pages that cannot be read.
    ``read``: the rowids read; ``indexed``: those the table's indexes list (readable or not), all
    of them if ``index_whole``; ``stepped_over``: how many rowids the steps past went over."""

    def __init__(self, conn: sqlite3.Connection, table: str):
        self.conn, self.table = conn, table
        self.read: set[int] = set()
        self.indexed: set[int] = set()
        self.index_whole = False
        self.stepped_over = 0

    def __iter__(self) -> Iterator[sqlite3.Row]:
        try:
            indexes = [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                                       "tbl_name = ?", (self.table,))]
        except sqlite3.DatabaseError:
            indexes = []
        for index in indexes:  # rowids only: read from the index's own pages, not the table's
            try:
                for (rowid,) in self.conn.execute(f'SELECT rowid FROM "{self.table}" INDEXED BY "{index}"'):
                    self.indexed.add(rowid)
                self.index_whole = True
            except sqlite3.DatabaseError:
                continue
        last = -_LAST_ROWID - 1
        while last is not None:
            try:
                for row in self.conn.execute(self._query(), (last,)):
                    last = row["_rowid"]
                    self.read.add(last)
                    yield row
                return
            except sqlite3.DatabaseError:
                start = self._next_start(last)
                self.stepped_over += max(0, (start if start is not None else max(self.indexed, default=last)) - last)
                last = start

    def _query(self, limit: str = "") -> str:
        columns = _TABLES[self.table]
        return f'SELECT rowid AS _rowid, {columns} FROM "{self.table}" WHERE rowid > ? ORDER BY rowid{limit}'

    def _readable_after(self, start: int) -> bool:
        try:
            self.conn.execute(self._query(" LIMIT 1"), (start,)).fetchall()
            return True
        except sqlite3.DatabaseError:
            return False

    def _next_start(self, last: int) -> int | None:
        """The least ``start`` > ``last`` whose first following row reads (steps doubling, then
        halving: a few dozen look-ups, whatever the gap); None past the last possible rowid."""
        step = 1
        while not self._readable_after(min(last + step, _LAST_ROWID)):
            if last + step >= _LAST_ROWID:
                return None
            step *= 2
        low, high = last + step // 2, min(last + step, _LAST_ROWID)  # unreadable after low (or low = last)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self._readable_after(middle) else (middle, high)
        return high


def _json_or_none(text) -> bool:
    if text is None:
        return True
    try:
        json.loads(text)
        return True
    except (TypeError, ValueError):
        return False


def _whole_run(row: sqlite3.Row, runs: set) -> tuple | None:
    if not isinstance(row["id"], str) or not isinstance(row["kind"], str) or not isinstance(row["config"], str):
        return None
    if not (_json_or_none(row["config"]) and _json_or_none(row["summary"])):
        return None
    values = [row[c.strip()] for c in _TABLES["runs"].split(",")]
    if row["status"] not in (Status.DONE, Status.FAILED, Status.CANCELLED):  # its process is not coming back
        values[5], values[6] = Status.FAILED.value, ("recovered from a damaged store while it was running; run it "
                                                     "again to resume")
    return tuple(values)


def _whole_cell(row: sqlite3.Row, runs: set) -> tuple | None:
    if row["run_id"] not in runs or not _json_or_none(row["details"]):
        return None
    return tuple(row[c.strip()] for c in _TABLES["cells"].split(","))


def _whole_artifact(row: sqlite3.Row, runs: set) -> tuple | None:
    return tuple(row[c.strip()] for c in _TABLES["artifacts"].split(",")) if row["run_id"] in runs else None


def _insert(store: Store, table: str, batch: list[tuple]) -> int:
    if not batch:
        return 0
    columns = _TABLES[table]
    with store.transaction() as conn:
        before = conn.total_changes
        conn.executemany(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({', '.join('?' * len(batch[0]))})",
                         batch)
        added = conn.total_changes - before
    batch.clear()
    return added
