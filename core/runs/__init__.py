"""Stored runs and the work behind them.

This package is the one door between the pages, the CLI, sweeps and the engine (the runs
service, :mod:`core.runs.service`, re-exported here)::

    from core import runs
    runs.find(store, "grid", config)            # the stored run, or None (no torch imported)
    runs.submit(store, "grid", [config, control])
    runs.load(store, run_id)

Its modules: ``store`` (results in SQLite), ``jobs`` (the queue and its worker), ``lifecycle``
(a run's states, written once), ``recipes`` (named grid settings), the kinds of computation
(``cka_runs``, ``similarity_runs``, ``analysis``; grids live in :mod:`core.engine.grid`), ``sweep`` with
``sweep_tracking`` and the Ray executor ``sweep_ray``, and ``lesson`` (the Lesson's material).
"""

from .service import (
                      DEVICE_TYPES,
                      KINDS,
                      Kind,
                      execute,
                      find,
                      identity,
                      identity_key,
                      kind_of,
                      load,
                      register,
                      serve,
                      serving,
                      submit,
)

__all__ = ["DEVICE_TYPES", "KINDS", "Kind", "execute", "find", "identity", "identity_key", "kind_of", "load",
           "register", "serve", "serving", "submit"]
