"""A sweep's bookkeeping, shared by its executors (:mod:`core.runs.sweep` in process,
:mod:`core.runs.sweep_ray` on a cluster): one entry per grid, progress over all of them, and
committing a grid computed elsewhere."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.engine.results import GridConfig, GridResult, summarize
from core.progress import Progress, Status

__all__ = ["Entry", "Tracker", "record_failure", "commit_grid", "MAX_RETRIES"]

MAX_RETRIES = 2  # Ray attempts a grid at most 1 + MAX_RETRIES times


@dataclass
class Entry:
    config: GridConfig
    identity: dict
    run_id: str | None = None
    state: str = "pending"  # pending | running | done | failed | cancelled

    def public(self) -> dict:
        return {"sender": self.config.sender, "receiver": self.config.receiver, "control": self.config.control,
                "run_id": self.run_id, "state": self.state}

    def label(self) -> str:
        return f"{self.config.sender} -> {self.config.receiver} ({self.config.control})"


class Tracker:
    """The sweep's view of its grids: writes the ``grids`` artifact (throttled) and reports
    progress with an ETA from the grids computed in this session."""

    def __init__(self, store, sweep_id: str, entries: list[Entry], progress):
        self.store, self.sweep_id, self.entries, self.progress = store, sweep_id, entries, progress
        self.start, self.computed, self.last_flush = time.perf_counter(), 0, 0.0

    def flush(self, force: bool = True) -> None:
        if force or time.perf_counter() - self.last_flush > 1.0:
            self.store.put_artifact(self.sweep_id, "grids", [e.public() for e in self.entries])
            self.last_flush = time.perf_counter()

    def count(self, state: str) -> int:
        return sum(e.state == state for e in self.entries)

    def report(self, stage: str, message: str, partial: float = 0.0, entry: Entry | None = None) -> None:
        if self.progress is None:
            return
        total, done, failed = len(self.entries), self.count("done"), self.count("failed")
        remaining = total - done - failed
        elapsed = time.perf_counter() - self.start
        worked = self.computed + partial
        eta = elapsed / worked * (remaining - partial) if worked > 0.05 and remaining else None
        counts = {"done": done, "failed": failed, "total": total, "grid": entry.public() if entry else None}
        self.progress(Progress(stage, (done + failed + partial) / max(1, total), message, eta, elapsed,
                               counts=counts))

    def finished(self, entry: Entry, state: str, run_id: str | None, why: str | None = None) -> None:
        entry.state, entry.run_id = state, run_id or entry.run_id
        self.computed += 1
        self.flush()
        self.report("grid", f"{entry.label()}: {state}" + (f" ({why})" if why else ""), entry=entry)


def record_failure(store, entry: Entry, tracker: Tracker, label: str, message: str) -> None:
    run_id = entry.run_id or store.create_run("grid", entry.identity, f"{label}: {entry.label()}")
    store.update_run(run_id, status=Status.FAILED, message=message)
    tracker.finished(entry, "failed", run_id, message)


def commit_grid(store, config: GridConfig, identity: dict, result: GridResult, run_id: str | None = None,
                name: str | None = None) -> str:
    """Write a grid computed elsewhere (``run_grid(store=None)``) as a finished grid run.

    Reuses ``run_id`` (an unfinished run of the same identity) or creates a run. Cells get
    status, accuracy, details and the trained stitch's weights (``result.stitches``), so
    :func:`core.engine.grid.load_grid` and :func:`core.engine.stitched.load_stitched` read it exactly like a
    grid run_grid stored itself.
    """
    assert identity.get("sender") == config.sender and identity.get("control") == config.control
    if run_id is None:
        run_id = store.create_run("grid", identity, name)
    else:
        store.update_run(run_id, status=Status.RUNNING, message=None)
    for (i, j), cell in result.cells.items():
        store.put_cell(run_id, i, j, cell["status"], cell["accuracy"], cell["details"], result.stitches.get((i, j)))
    store.update_run(run_id, status=Status.DONE, message=None, seconds=result.seconds, summary=summarize(result))
    return run_id


