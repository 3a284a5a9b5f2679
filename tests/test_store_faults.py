"""Store faults (issue 19, item 5): a full disk, a read-only store, a damaged file, a run deleted
while its job computes it. What the maintainers of SQLite would expect of a program that keeps
people's results: say what is wrong in one line, keep what can be read readable, never write
over a damaged file, and copy out what it still holds.

Faults are injected where SQLite would report them (``sqlite3.connect`` wrapped for one store
file: writes fail with SQLite's own "database or disk is full", or every connection is opened
``mode=ro``, as SQLite opens a file it may not write). Where the machine allows it (root with
``unshare``), a real full disk (a small tmpfs) and a real read-only bind mount, each in a mount
namespace of its own, are used too; as a user, a chmod-ed file and folder (chmod does not stop
root, which these tests ran as here).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from core import paths
from core.runs import jobs
from core.runs.store import Store, StoreError
from ui.text import plain

REAL_CONNECT = sqlite3.connect
PAGE = 4096
# Statements that write. (CREATE TABLE IF NOT EXISTS on a store that has its tables writes nothing,
# and a full disk lets it pass.)
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|PRAGMA\s+(application_id|journal_mode)\s*=)", re.IGNORECASE)


# --- injected faults ---------------------------------------------------------------------------
def _file_of(database) -> str:
    text = str(database)
    if text.startswith("file:"):
        text = unquote(text[5:].split("?", 1)[0])
    return os.path.realpath(text)


class FullDisk:
    """Writes to one store file fail as SQLite fails them on a full disk, while ``on``; ``only``:
    just the statements that name this table; ``room_after``: space is freed after that many
    writes failed."""

    def __init__(self, path: Path, only: str | None = None, on: bool = True, room_after: int | None = None):
        self.path, self.only, self.on, self.failed = os.path.realpath(path), only, on, 0
        self.room_after = room_after

    def check(self, sql: str) -> None:
        if self.on and _WRITE.match(sql) and (self.only is None or re.search(rf"\b{self.only}\b", sql)):
            self.failed += 1
            self.on = self.room_after is None or self.failed < self.room_after
            raise sqlite3.OperationalError("database or disk is full")

    def install(self, monkeypatch=None) -> None:
        fault = self

        class Connection(sqlite3.Connection):
            def execute(self, sql, *args):
                fault.check(sql)
                return super().execute(sql, *args)

            def executemany(self, sql, *args):
                fault.check(sql)
                return super().executemany(sql, *args)

        def connect(database, *args, **kwargs):
            if _file_of(database) == fault.path:
                kwargs["factory"] = Connection
            return REAL_CONNECT(database, *args, **kwargs)

        if monkeypatch is None:
            sqlite3.connect = connect
        else:
            monkeypatch.setattr(sqlite3, "connect", connect)


def read_only(path: Path, monkeypatch) -> None:
    """Every connection to ``path`` opened read-only, as SQLite opens a file it may not write."""
    target = os.path.realpath(path)

    def connect(database, *args, **kwargs):
        if _file_of(database) != target:
            return REAL_CONNECT(database, *args, **kwargs)
        extra = "&immutable=1" if "immutable=1" in str(database) else ""
        kwargs["uri"] = True
        return REAL_CONNECT(f"file:{quote(target)}?mode=ro{extra}", *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and "Move it away" not in message, message


def _cli(*args, prelude: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m core ARGS`` in a fresh process, after ``prelude`` (a fault to install there)."""
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(paths.PROJECT_ROOT)!r}, {str(Path(__file__).parent)!r}]
        {prelude}
        from core.cli import main
        sys.exit(main({list(args)!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=paths.PROJECT_ROOT)


def _new_process(monkeypatch) -> None:
    """What a newly started process knows: no file checked yet (the check runs once per process)."""
    from core.runs import store_file

    monkeypatch.setattr(store_file, "_CHECKED", set())


# --- stores ------------------------------------------------------------------------------------
def _filled(path: Path, runs: int = 30, cells: int = 8, seed: int = 0) -> dict:
    """A store of ``runs`` finished grids of ``cells`` cells with 3 kB stitch weights each; returns
    what it holds: run id -> (config, {(sender, receiver): (accuracy, details, stitch)})."""
    rng = random.Random(seed)
    store, held = Store(path), {}
    for k in range(runs):
        run_id = store.create_run("grid", {"sender": f"a{k}", "receiver": "b"}, name=f"grid {k}")
        held[run_id] = ({"sender": f"a{k}", "receiver": "b"}, {})
        for i in range(cells):
            cell = (round(rng.random(), 4), {"i": i}, rng.randbytes(3000))
            store.put_cell(run_id, f"layer{i}", "layer1.0", "done", *cell)
            held[run_id][1][(f"layer{i}", "layer1.0")] = cell
        store.update_run(run_id, status="done")
    return held


def _scribble(path: Path, pages: range, seed: int = 1) -> bytes:
    """Random bytes over whole pages of the file; returns the file's new bytes."""
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for page in pages:
        data[page * PAGE:(page + 1) * PAGE] = rng.randbytes(PAGE)
    path.write_bytes(bytes(data))
    return bytes(data)


def _set_aside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.damaged-")
                  and not p.name.endswith(("-wal", "-shm")))


def _root_page(path: Path, table: str) -> int:
    conn = REAL_CONNECT(path)
    try:
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        conn.close()


# --- a full disk -------------------------------------------------------------------------------
def test_a_full_disk_keeps_the_store_readable_and_says_what_it_is(tmp_path, monkeypatch):
    path = tmp_path / "full.sqlite3"
    held = _filled(path, runs=3, cells=2)
    FullDisk(path).install(monkeypatch)
    store = Store(path)  # was: "not a usable SQLite database ... Move it away", reads refused
    assert "is full" in store.notice
    assert {r["id"] for r in store.list_runs()} == set(held)
    run_id = next(iter(held))
    assert len(store.cells(run_id)) == 2 and store.cell_stitch(run_id, "layer0", "layer1.0") is not None
    with pytest.raises(StoreError, match=r"the disk holding .* is full: nothing new can be saved") as refused:
        store.create_run("grid", {"sender": "x"})
    _one_line(str(refused.value))
    assert "Free some space" in str(refused.value)


@functools.cache
def _mounts_work() -> bool:
    """Whether this process may mount file systems in a mount namespace of its own (root, unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def _in_namespace(mount: str, script: str, timeout: int = 300) -> dict:
    """Run ``script`` (python) in a private mount namespace after ``mount``; its last stdout line
    is JSON."""
    out = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && {sys.executable} -c {_quote(script)}"],
                         capture_output=True, text=True, timeout=timeout, cwd=paths.PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.mark.skipif(not _mounts_work(), reason="needs root and unshare (a real, small tmpfs)")
def test_a_really_full_disk(tmp_path):
    # A 512 kB tmpfs filled to the last byte: SQLite's real ENOSPC answers, with and without its
    # shared-memory file (a process still holding the store, or none).
    disk = tmp_path / "disk"
    disk.mkdir()
    script = textwrap.dedent(f"""
        import json, os, subprocess, sys, sqlite3
        sys.path.insert(0, {str(paths.PROJECT_ROOT)!r})
        from core.runs.store import Store, StoreError
        path = {str(disk / "store.sqlite3")!r}
        run_id = Store(path).create_run("grid", {{"sender": "a"}})
        Store(path).put_cell(run_id, "stem", "layer1.0", "done", 0.5)
        fd = os.open({str(disk / "filler")!r}, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        listing = subprocess.run([sys.executable, "-m", "core", "runs", "--db", path], capture_output=True,
                                 text=True)
        store = Store(path)
        try:
            store.create_run("grid", {{"sender": "b"}})
            write = "written"
        except StoreError as exc:
            write = str(exc)
        print(json.dumps({{"rc": listing.returncode, "stdout": listing.stdout, "stderr": listing.stderr,
                          "cells": len(store.cells(run_id)), "write": write}}))
    """)
    found = _in_namespace(f"mount -t tmpfs -o size=512k none {disk}", script)
    assert found["rc"] == 0 and found["stdout"].count("grid") == 1, found  # was: exit 2, "not a usable ..."
    assert found["cells"] == 1
    assert "is full: nothing new can be saved" in found["write"], found
    _one_line(found["write"])


GRID = ["grid", "zoo/resnet_1111-s0", "zoo/resnet_1111-s1", "--sender-layers", "layer4.0", "--receiver-layers",
        "layer4.0", "--mode", "lstsq", "--train-limit", "100", "--eval-limit", "100", "--device", "cpu", "--quiet"]


def test_a_disk_full_during_a_cli_grid_is_one_line_and_marks_the_run_failed(tmp_path):
    path = tmp_path / "grid.sqlite3"
    Store(path)
    fault = f"import test_store_faults as t; t.FullDisk({str(path)!r}, only='cells').install()"
    out = _cli(*GRID, "--db", str(path), "--json", str(tmp_path / "grid.json"), prelude=fault)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr  # was: two chained tracebacks
    assert lines[0].startswith("error: the disk holding") and "was marked failed" in lines[0], lines[0]
    (run,) = Store(path).list_runs()
    assert run["status"] == "failed" and "is full" in run["message"]  # was: left running


def test_a_disk_full_that_refuses_every_write_leaves_the_run_to_the_next_open(tmp_path):
    path = tmp_path / "grid.sqlite3"
    Store(path)
    # Space runs out at the first cell and stays out: the run cannot be marked by its process.
    fault = (f"import test_store_faults as t; f = t.FullDisk({str(path)!r}, on=False); f.install(); "
             f"import core.runs.store as s; put = s.Store.put_cell; "
             f"s.Store.put_cell = lambda *a, **k: (setattr(f, 'on', True), put(*a, **k))")
    out = _cli(*GRID, "--db", str(path), "--json", str(tmp_path / "grid.json"), prelude=fault)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "is full" in lines[0] and "left marked running: the next open of the store marks it failed" in lines[0]
    (run,) = Store(path).list_runs()  # the next open: its process is gone
    assert run["status"] == "failed" and "ended before it could mark it finished" in run["message"], run


def test_runs_left_running_by_a_process_that_is_gone_are_failed_on_the_next_open(tmp_path):
    path = tmp_path / "orphans.sqlite3"
    store = Store(path)
    mine = store.create_run("grid", {"sender": "mine"})  # this process is alive: untouched
    code = (f"import sys, os; sys.path.insert(0, {str(paths.PROJECT_ROOT)!r}); from core.runs.store import Store; "
            f"Store({str(path)!r}).create_run('grid', {{'sender': 'killed'}}); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    runs = {r["config"]["sender"]: r for r in Store(path).list_runs()}
    assert runs["killed"]["status"] == "failed" and "its stored results are kept" in runs["killed"]["message"]
    assert runs["mine"]["status"] == "running" and runs["mine"]["id"] == mine


def _fake_job(body):
    """A worker's ``execute`` that runs ``body(store, life)`` inside a run's lifecycle."""
    from core.runs.lifecycle import lifecycle

    def execute(store, kind, configs, options, progress, cancel):
        with lifecycle(store) as life:
            run_id, _ = life.open("grid", configs[0])
            body(store, run_id)
            life.done(run_id)
        return run_id
    return execute


def _one_job(store: Store, config: dict) -> int:
    return jobs.submit(store, "grid", [config], [json.dumps(config)]).job_id


def test_a_disk_full_during_a_job_fails_its_run_and_job_with_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    job_id = _one_job(store, {"sender": "a"})
    FullDisk(path, only="cells").install(monkeypatch)
    jobs.run_worker(_fake_job(lambda s, run_id: s.put_cell(run_id, "stem", "layer1.0", "done", 0.5)), path,
                    poll=0.01, idle_exit=0, max_jobs=1)
    job, (run,) = jobs.get(store, job_id), store.list_runs()
    assert job["status"] == "failed" and job["message"].startswith(f"the disk holding {path} is full"), job
    assert run["status"] == "failed" and "is full" in run["message"], run


def test_a_job_whose_end_cannot_be_written_is_ended_once_there_is_space(tmp_path, monkeypatch):
    # Every write fails from the job's first cell on (the cell, the run's mark, the job's end),
    # then there is room again: the worker must neither die nor leave the job and its run
    # running; it writes both ends once it can.
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    job_id = _one_job(store, {"sender": "a"})
    fault = FullDisk(path, on=False, room_after=3)
    fault.install(monkeypatch)

    def body(s, run_id):
        fault.on = True
        s.put_cell(run_id, "stem", "layer1.0", "done", 0.5)

    jobs.run_worker(_fake_job(body), path, poll=0.01, idle_exit=0.2)  # was: the error out of the worker
    job, (run,) = jobs.get(store, job_id), store.list_runs()
    assert fault.failed == 3
    assert job["status"] == "failed" and "is full" in job["message"], job
    assert run["status"] == "failed" and "is full" in run["message"], run


# --- a read-only store -------------------------------------------------------------------------
def test_a_read_only_store_is_read_and_refuses_writes_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "ro.sqlite3"
    held = _filled(path, runs=2, cells=2)
    read_only(path, monkeypatch)
    store = Store(path)  # was: "not a usable SQLite database ... Move it away"
    assert store.read_only and "is read-only" in store.notice
    assert {r["id"] for r in store.list_runs()} == set(held)
    with pytest.raises(StoreError, match="is read-only") as refused:
        store.rename_run(next(iter(held)), "new name")
    _one_line(str(refused.value))


def _really_read_only(path: Path) -> str | None:
    """A mount command making ``path``'s folder really read-only (root), or None: chmod it (a user)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        return None
    if not _mounts_work():
        pytest.skip("root without unshare: chmod does not stop root, and no read-only mount can be made")
    return f"mount --bind -o ro {path.parent} {path.parent}"


def test_a_really_read_only_store(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "store.sqlite3"
    held = _filled(path, runs=2, cells=1)
    mount = _really_read_only(path)
    script = textwrap.dedent(f"""
        import json, subprocess, sys
        sys.path.insert(0, {str(paths.PROJECT_ROOT)!r})
        from core.runs.store import Store, StoreError
        listing = subprocess.run([sys.executable, "-m", "core", "runs", "--db", {str(path)!r}], capture_output=True,
                                 text=True)
        try:
            Store({str(path)!r}).create_run("grid", {{"sender": "b"}})
            write = "written"
        except StoreError as exc:
            write = str(exc)
        print(json.dumps({{"rc": listing.returncode, "stdout": listing.stdout, "stderr": listing.stderr,
                          "write": write}}))
    """)
    try:
        if mount:
            found = _in_namespace(mount, script)
        else:
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            found = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
    assert found["rc"] == 0 and all(run_id in found["stdout"] for run_id in held), found  # was: exit 2
    assert "is read-only" in found["write"], found
    _one_line(found["write"])


# --- a damaged file ----------------------------------------------------------------------------
def test_random_bytes_in_data_pages_set_the_store_aside_and_recover_copies_the_rest(tmp_path, monkeypatch):
    path = tmp_path / "damaged.sqlite3"
    held = _filled(path)
    pages = path.stat().st_size // PAGE
    damaged = _scribble(path, range(pages // 2, pages // 2 + 3))
    _new_process(monkeypatch)
    store = Store(path)  # was: passed the open check; reads then ended in DatabaseError tracebacks
    (moved,) = _set_aside(path)
    assert store.notice.startswith(f"{path} was damaged") and str(moved) in store.notice
    _one_line(store.notice)
    assert moved.read_bytes() == damaged  # moved as it was, not rewritten
    assert store.list_runs() == []  # a new store in its place

    new = tmp_path / "recovered.sqlite3"
    out = _cli("store", "recover", str(moved), "--to", str(new))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("recovered ") and len(out.stdout.strip().splitlines()) == 1
    assert moved.read_bytes() == damaged  # the damaged file is only read
    recovered = Store(new)
    runs = recovered.list_runs()
    assert len(runs) == len(held)  # three pages of stitch weights hit cells, not runs
    copied = 0
    for run in runs:
        config, cells = held[run["id"]]
        assert run["config"] == config and run["status"] == "done"
        for cell in recovered.cells(run["id"]):
            key = (cell["sender_layer"], cell["receiver_layer"])
            assert (cell["accuracy"], cell["details"]) == cells[key][:2]
            assert recovered.cell_stitch(run["id"], *key) == cells[key][2]
            copied += 1
    assert 0 < copied < sum(len(c) for _, c in held.values())
    skipped = sum(len(c) for _, c in held.values()) - copied
    # where the pages hit the cells' index too, it cannot list them all: the count is a bound ("up to")
    assert re.search(rf"{copied} cells .* \(unreadable, skipped: (up to )?{skipped} cells\)", out.stdout), out.stdout


def test_a_truncated_store_is_set_aside(tmp_path, monkeypatch):
    path = tmp_path / "cut.sqlite3"
    held = _filled(path, runs=20, cells=4)
    os.truncate(path, path.stat().st_size * 6 // 10)
    cut = path.read_bytes()
    _new_process(monkeypatch)
    out = _cli("runs", "--db", str(path))  # a new process: the CLI says where the file went, lists the new store
    assert out.returncode == 0 and out.stdout == "", out.stderr
    (moved,) = _set_aside(path)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"{path} was damaged" in out.stderr and str(moved) in out.stderr
    assert moved.read_bytes() == cut
    from core.runs.recovery import recover

    done = recover(moved, tmp_path / "back.sqlite3")
    assert 0 < done.copied["runs"] <= len(held) and done.copied["cells"] > 0


def test_damage_met_while_the_store_is_open_is_one_line(tmp_path):
    path = tmp_path / "live.sqlite3"
    _filled(path, runs=5, cells=1)
    store = Store(path)  # checked whole when opened
    _scribble(path, range(_root_page(path, "runs") - 1, _root_page(path, "runs")))
    with pytest.raises(StoreError) as met:  # was: sqlite3.DatabaseError: database disk image is malformed
        store.list_runs()
    (moved,) = _set_aside(path)
    assert str(moved) in str(met.value) and "python -m core store recover" in str(met.value)
    _one_line(str(met.value))
    assert store.list_runs() == []  # the store object goes on, on the new file


def test_another_process_follows_a_store_set_aside(tmp_path, monkeypatch):
    path = tmp_path / "shared.sqlite3"
    _filled(path, runs=3, cells=1)
    app = Store(path)  # the app's store, opened before the damage
    _scribble(path, range(_root_page(path, "cells") - 1, _root_page(path, "cells")))
    _new_process(monkeypatch)
    Store(path)  # the worker starting: sets the file aside
    assert len(_set_aside(path)) == 1
    assert app.list_runs() == []  # the app reads the new store, not an empty file without tables
    app.create_run("grid", {"sender": "again"})


def test_setting_aside_never_overwrites_a_file(tmp_path, monkeypatch):
    path = tmp_path / "twice.sqlite3"
    _filled(path, runs=3, cells=1)
    _scribble(path, range(_root_page(path, "runs") - 1, _root_page(path, "runs")))
    monkeypatch.setattr(time, "strftime", lambda *args: "20270101-000000")
    taken = tmp_path / "twice.sqlite3.damaged-20270101-000000"
    taken.write_bytes(b"an earlier damaged store")
    _new_process(monkeypatch)
    store = Store(path)
    assert taken.read_bytes() == b"an earlier damaged store"
    assert (tmp_path / "twice.sqlite3.damaged-20270101-000000-2").exists()
    assert "damaged-20270101-000000-2" in store.notice


def test_a_damaged_file_not_known_as_a_store_is_left_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / "theirs.sqlite3"
    conn = REAL_CONNECT(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, text TEXT)")
    conn.executemany("INSERT INTO invoices (text) VALUES (?)", [("x" * 500,)] * 200)
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    data[100:PAGE] = random.Random(2).randbytes(PAGE - 100)  # the table list, after an intact header
    path.write_bytes(bytes(data))
    _new_process(monkeypatch)
    with pytest.raises(StoreError, match="cannot tell for its own; it was left as it is") as refused:
        Store(path)
    assert "python -m core store recover" in str(refused.value)
    _one_line(str(refused.value))
    assert path.read_bytes() == bytes(data) and _set_aside(path) == []


def test_recover_refuses_to_write_over_a_file(tmp_path):
    path = tmp_path / "a.sqlite3"
    _filled(path, runs=1, cells=1)
    existing = tmp_path / "b.sqlite3"
    existing.write_bytes(b"keep")
    out = _cli("store", "recover", str(path), "--to", str(existing))
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "exists" in out.stderr
    assert existing.read_bytes() == b"keep"


# --- deleting a run while its job computes it --------------------------------------------------
def test_deleting_a_run_while_its_job_computes_it_cancels_the_job(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    job_id = _one_job(store, {"sender": "a"})
    started, deleted, runs = threading.Event(), threading.Event(), []

    def body(s, run_id):
        s.put_cell(run_id, "stem", "layer1.0", "done", 0.5)
        runs.append(run_id)
        started.set()
        deleted.wait(60)
        s.put_cell(run_id, "stem", "layer2.0", "done", 0.5)  # the next cell of a deleted run

    worker = threading.Thread(target=jobs.run_worker, args=(_fake_job(body), path),
                              kwargs={"poll": 0.01, "idle_exit": 0, "max_jobs": 1})
    worker.start()
    assert started.wait(60)
    store.delete_run(runs[0])  # what the Runs page called
    deleted.set()
    worker.join(60)
    job = jobs.get(store, job_id)
    assert job["status"] == "cancelled", job  # was: failed: FOREIGN KEY constraint failed
    assert f"run {runs[0]} was deleted while it was being computed" in job["message"]
    assert store.list_runs() == []


def test_the_runs_page_cancels_the_job_of_a_run_it_deletes(app_db):
    store = Store(app_db)
    job_id = _one_job(store, {"sender": "a"})
    assert jobs._claim(store)["id"] == job_id  # this process is the job's worker
    run_id = store.create_run("grid", {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1"})
    at = _app()
    at.switch_page("pages/runs.py")
    at.query_params["run"] = run_id
    at.run()
    at.checkbox(key=f"del_{run_id}").check().run()
    (button,) = [b for b in at.button if b.label == "Cancel and delete"]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert run_id not in {r["id"] for r in store.list_runs()}
    assert jobs.get(store, job_id)["cancel"] == 1


# --- the app ---------------------------------------------------------------------------------
# AppTest runs the first page (Stitching) through app.py, as a browser always does; a page it
# switches to runs alone (its legacy mode for a pages/ folder), without app.py's line.
def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(paths.PROJECT_ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_app_on_a_read_only_store_says_so_and_shows_what_it_holds(app_db, monkeypatch):
    held = _filled(app_db, runs=2, cells=1)
    read_only(app_db, monkeypatch)
    at = _app()
    assert not at.error, [e.value for e in at.error]  # was: "not a usable SQLite database ... Move it away"
    assert any("is read-only" in w.value for w in at.warning), [w.value for w in at.warning]
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    (table,) = at.dataframe
    assert set(table.value["run"]) == set(held)


def _page_pressing_run():
    """What app.py does with a page whose Run button was pressed: the page queues a grid. (AppTest
    runs only an app's first page through app.py; a click reruns the page alone.)"""
    from core.models import catalog
    from core.runs.recipes import grid_config
    from ui import jobs
    from ui.state import run_page

    class Page:
        def run(self):
            jobs.submit("grid", [grid_config(catalog.DEFAULT_SENDER, catalog.DEFAULT_RECEIVER, "instant", "quick")],
                        "cpu")

    run_page(Page())


def test_the_app_on_a_full_disk_ends_a_write_in_one_line(app_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    Store(app_db)
    FullDisk(app_db).install(monkeypatch)
    at = AppTest.from_function(_page_pressing_run, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]  # was: a page exception
    (error,) = [e.value for e in at.error]
    assert "is full" in error
    _one_line(error)


def test_the_app_on_a_damaged_store_says_where_it_went(app_db, monkeypatch):
    _filled(app_db, runs=3, cells=1)
    _scribble(app_db, range(_root_page(app_db, "runs") - 1, _root_page(app_db, "runs")))
    _new_process(monkeypatch)
    at = _app()
    (moved,) = _set_aside(app_db)
    assert any(plain(str(moved)) in w.value for w in at.warning), [w.value for w in at.warning]
