"""Seconds of the integrity check a store gets when a process first opens it (``PRAGMA quick_check``).

A store of ``--runs`` grids of 45 cells, each cell's stitch weights as large as those of the
grids in ``tests/data`` (75 kB on average, up to 525 kB: a store of 300 grids is about 1 GB), is
written once to ``--path``; then the check is timed with the file in the page cache (warm) and
after the file's pages were dropped from it (cold: ``posix_fadvise(DONTNEED)``, this file only).

    python -m bench.store_check [--runs 300] [--path /tmp/store-check.sqlite3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
from pathlib import Path

import torch

from ._util import emit

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "store-803aafe.sqlite3"


def _build(path: Path, runs: int) -> None:
    from core.runs.store import Store

    conn = sqlite3.connect(f"file:{REFERENCE}?mode=ro", uri=True)
    sizes = [len(row[0] or b"") for row in conn.execute("SELECT stitch FROM cells")]
    conn.close()
    store, rng = Store(path), random.Random(0)
    for k in range(runs):
        run_id = store.create_run("grid", {"bench": k})
        with store.transaction() as conn:
            conn.executemany("INSERT INTO cells VALUES (?, ?, ?, 'done', 0.9, ?, ?, ?)",
                             [(run_id, f"s{i}", f"r{j}", '{"per_class": [0.9]}', os.urandom(rng.choice(sizes)),
                               time.time()) for i in range(9) for j in range(5)])
        store.update_run(run_id, status="done")


def _check_seconds(path: Path, cold: bool) -> float:
    if cold:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--path", default="/tmp/store-check.sqlite3")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        _build(path, args.runs)
    _check_seconds(path, cold=False)  # into the page cache
    warm = [_check_seconds(path, cold=False) for _ in range(args.repeats)]
    cold = [_check_seconds(path, cold=True) for _ in range(args.repeats)]
    return emit("store_quick_check", torch.device("cpu"), store_mb=round(path.stat().st_size / 1e6, 1),
                runs=args.runs, warm_s=round(statistics.median(warm), 3), cold_s=round(statistics.median(cold), 3))


if __name__ == "__main__":
    main()
