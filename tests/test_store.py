import sqlite3

import pytest

from core.runs.store import Store, StoreError, config_hash


def test_runs_cells_and_artifacts_round_trip(store):
    run = store.create_run("grid", {"a": 1, "b": [1, 2]}, name="first")
    store.put_cell(run, "stem", "layer1.0", "done", 0.9, {"per_class": [0.9]}, b"weights")
    store.put_cell(run, "stem", "layer2.0", "not_stitchable", None, {"reason": "too big"})
    store.put_artifact(run, "cka", {"matrix": [[1.0]]})
    assert store.find_run("grid", {"b": [1, 2], "a": 1})["id"] == run  # key order does not matter
    assert store.find_run("cka", {"a": 1, "b": [1, 2]}) is None
    cells = store.cells(run)
    assert [c["status"] for c in cells] == ["done", "not_stitchable"] and cells[1]["accuracy"] is None
    assert store.cell_stitch(run, "stem", "layer1.0") == b"weights"
    assert store.get_artifact(run, "cka") == {"matrix": [[1.0]]}
    store.rename_run(run, "renamed")
    assert store.get_run(run)["name"] == "renamed"
    store.delete_run(run)
    assert store.cells(run) == [] and store.get_artifact(run, "cka") is None
    with pytest.raises(KeyError, match="no run"):
        store.get_run(run)


def test_wal_mode_and_stable_hash(tmp_path):
    s = Store(tmp_path / "x.sqlite3")
    with s.connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})
    Store(tmp_path / "x.sqlite3")  # reopening our own store is fine


def test_foreign_and_corrupt_files_are_reported_not_overwritten(tmp_path):
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="another program's SQLite database"):
        Store(foreign)
    assert foreign.read_bytes() == before
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(corrupt)
    assert corrupt.read_bytes() == b"this is not a database at all" * 100


def _open_store(path, results):
    try:
        Store(path)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the test reports whatever went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    # The app and its worker open the store together on first launch; the check, the tables and
    # the meta rows are one transaction, so nobody sees a half-made store.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for trial in range(10):
        path, results = tmp_path / f"new-{trial}.sqlite3", context.Queue()
        openers = [context.Process(target=_open_store, args=(path, results)) for _ in range(8)]
        for p in openers:
            p.start()
        for p in openers:
            p.join(timeout=60)
        assert [results.get(timeout=5) for _ in openers] == ["ok"] * 8
