"""A stored run's life, written once: created or resumed, then done, failed or cancelled.

Every computation that stores a run (a grid and its controls, a CKA matrix, a sweep, an
attribution, a stitch's CKA) opens its runs and works inside one :func:`lifecycle`::

    with lifecycle(store) as life:
        run_id, previous = life.open("cka", identity, name)   # the stored run, or a new one
        ...                                                   # compute, commit as it comes
        life.done(run_id, seconds=..., summary=...)

A run not marked done when the block ends by an exception is marked ``cancelled`` (on
:class:`~core.errors.Cancelled`) or ``failed`` with the error's one-line message; what it had
stored (cells, artifacts) stays. Without a store (a Ray worker) every call is a no-op.
"""

from __future__ import annotations

from contextlib import contextmanager

from core.errors import Cancelled
from core.progress import Status

__all__ = ["Lifecycle", "lifecycle"]


class Lifecycle:
    """The runs one computation opened, and which of them are finished."""

    def __init__(self, store):
        self.store = store
        self._open: list[str] = []
        self._finished: set[str] = set()

    def open(self, kind: str, identity: dict, name: str | None = None,
             reuse: bool = True) -> tuple[str | None, dict | None]:
        """``(run id, the stored run or None)``: the newest run of this identity when ``reuse``
        (then marked running again, unless it is done), else a new run."""
        if self.store is None:
            return None, None
        previous = self.store.find_run(kind, identity) if reuse else None
        if previous is None:
            run_id = self.store.create_run(kind, identity, name)
        else:
            run_id = previous["id"]
            if previous["status"] != Status.DONE:
                self.store.update_run(run_id, status=Status.RUNNING, message="resumed")
        self._open.append(run_id)
        return run_id, previous

    def done(self, run_id: str | None, **fields) -> None:
        """Mark a run done (``fields``: seconds, summary, message)."""
        if self.store is not None and run_id is not None:
            self.store.update_run(run_id, status=Status.DONE, **{"message": None, **fields})
        self._finished.add(run_id)

    def finished(self, run_id: str | None) -> None:
        """A run that needs no marking (found complete in the store)."""
        self._finished.add(run_id)

    def end(self, status: Status, message: str) -> None:
        if self.store is None:
            return
        for run_id in self._open:
            if run_id not in self._finished:
                self.store.update_run(run_id, status=status, message=message)


@contextmanager
def lifecycle(store):
    """A :class:`Lifecycle` whose unfinished runs are marked cancelled or failed on the way out."""
    life = Lifecycle(store)
    try:
        yield life
    except Cancelled:
        life.end(Status.CANCELLED, "cancelled by the user; finished results are kept")
        raise
    except BaseException as exc:
        life.end(Status.FAILED, " ".join(f"{type(exc).__name__}: {exc}".split()))
        raise
