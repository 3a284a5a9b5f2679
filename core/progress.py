"""How every computation reports progress and hears a cancel: one event type, one check.

A grid, a CKA matrix, a sweep, an attribution: each takes ``progress`` (called with a
:class:`Progress`) and ``cancel`` (a callable returning True to stop) and reports through a
:class:`Reporter`, which maps the part of the work in hand onto the whole and estimates the
time left. The engine calls :func:`check_cancel` before every unit of work (a training step,
a scoring batch, a least-squares batch, a CKA batch), so a cancel is honoured after at most
the unit in flight.

No torch here: the job worker, the CLI and the pages read these too.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import Cancelled

__all__ = ["Status", "Progress", "Reporter", "ProgressCallback", "CancelCheck", "check_cancel"]


class Status(enum.StrEnum):
    """A run's or a job's state. Stored as its string value, so stores written before this enum
    existed read the same."""

    QUEUED = "queued"  # jobs only: waiting for the worker
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def active(cls) -> tuple[Status, ...]:
        return cls.QUEUED, cls.RUNNING


@dataclass(frozen=True)
class Progress:
    """One progress event.

    ``fraction`` is of the whole computation (0 to 1); ``eta`` the seconds left (None while
    unknown); ``counts`` what a computation made of parts reports about them (a sweep:
    ``{"done": 3, "failed": 0, "total": 36}``)."""

    stage: str  # load, reference, lstsq, train, evaluate, cka, attribute, grid, done, ...
    fraction: float
    message: str
    eta: float | None = None
    elapsed: float | None = None
    run_id: str | None = None
    counts: dict = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` says so; called before every unit of work."""
    if cancel is not None and cancel():
        raise Cancelled()


class Reporter:
    """Turns "this much of the part in hand" into a :class:`Progress` of the whole, with an ETA.

    ``span(lo, hi)`` gives the reporter of a sub-part (fractions of this one's range), so a
    phase reports 0..1 of itself without knowing its share; shares are set where the work is
    planned (``core.engine.grid`` weighs its phases by their measured cost). A span takes its parent's
    run id as it is when the span is made."""

    def __init__(self, callback: ProgressCallback | None, start: float | None = None, lo: float = 0.0,
                 hi: float = 1.0, run_id: str | None = None):
        self.callback, self.lo, self.hi, self.run_id = callback, lo, hi, run_id
        self.start = time.perf_counter() if start is None else start

    def __call__(self, stage: str, fraction: float, message: str, counts: dict | None = None) -> None:
        if self.callback is None:
            return
        overall = self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / overall - elapsed if overall > 0.02 else None
        self.callback(Progress(stage, overall, message, eta, elapsed, self.run_id, counts or {}))

    def span(self, lo: float, hi: float) -> Reporter:
        """The reporter of the part ``[lo, hi]`` (fractions of this one's range) of the work."""
        width = self.hi - self.lo
        return Reporter(self.callback, self.start, self.lo + lo * width, self.lo + hi * width, self.run_id)
