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

When the store itself is the trouble (a full disk), marking the run may fail too: the error
then says whether the run was marked, and carries the marks it could not write
(``unmarked``: the job worker writes them once it can); a run left ``running`` so is marked
failed by the next open of the store (:class:`~core.runs.store.Store`).

:func:`delete` deletes a stored run, cancelling the job that is computing it first.
"""

from __future__ import annotations

from contextlib import contextmanager

from core.errors import Cancelled, StoreError
from core.progress import Status

__all__ = ["Lifecycle", "lifecycle", "delete"]


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

    def end(self, status: Status, message: str) -> tuple[list[str], list[tuple[str, Status, str]]]:
        """Mark the unfinished runs; returns the runs marked, and the marks the store refused (a
        full disk)."""
        marked, refused = [], []
        for run_id in self._open if self.store is not None else []:
            if run_id not in self._finished:
                try:
                    if self.store.update_run(run_id, status=status, message=message):
                        marked.append(run_id)
                except StoreError:  # the store's own trouble is the error being raised: not a second one
                    refused.append((run_id, status, message))
        return marked, refused


@contextmanager
def lifecycle(store):
    """A :class:`Lifecycle` whose unfinished runs are marked cancelled or failed on the way out."""
    life = Lifecycle(store)
    try:
        yield life
    except Cancelled:
        life.end(Status.CANCELLED, "cancelled by the user; finished results are kept")
        raise
    except StoreError as exc:  # its message is for the user as it is, and says what became of the runs
        message = " ".join(str(exc).split())
        marked, unmarked = life.end(Status.FAILED, message)
        fates = ([f"{_runs(marked)} marked failed"] if marked else []) + (
            [f"{_runs([run_id for run_id, _, _ in unmarked])} left marked running: the next open of the store "
             f"marks {'it' if len(unmarked) == 1 else 'them'} failed"] if unmarked else [])
        if not fates:
            raise
        error = type(exc)(f"{message}; {' and '.join(fates)}")
        error.unmarked = [*getattr(exc, "unmarked", []), *unmarked]  # an inner lifecycle's too
        raise error from None
    except BaseException as exc:
        life.end(Status.FAILED, " ".join(f"{type(exc).__name__}: {exc}".split()))
        raise


def _runs(run_ids: list[str]) -> str:
    return f"run {run_ids[0]} was" if len(run_ids) == 1 else f"runs {', '.join(run_ids)} were"


def delete(store, run_id: str) -> int | None:
    """Delete a stored run. A job of the queue still computing it is cancelled first (its next
    write would find no run: :meth:`~core.runs.store.Store.put_cell` raises Cancelled); returns
    that job's id, or None."""
    from core.runs import jobs

    job_id = None if store.read_only else jobs.computing(store, run_id)  # read-only: refused just below
    if job_id is not None:
        jobs.cancel(store, job_id)
    store.delete_run(run_id)
    return job_id
