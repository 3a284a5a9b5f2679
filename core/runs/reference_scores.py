"""A network's accuracy on its own, stored once per (weights, dataset, images, device type, layout).

Scoring the sender and the receiver alone is a fixed cost of every grid (26-28 s under load on
two CPU cores even on 1,000 images, issue 17); the loaded model keeps its score in memory, but a
worker that exits when idle forgot it. Here it is kept in the store, so a network is scored once
per test set for good. Only weights with a fingerprint are kept (zoo, paper, uploads, and their
random controls by seed); a ``folder:`` dataset can change under its name and is never kept.
"""

from __future__ import annotations

import json
import sqlite3
import time
from importlib import metadata

from core.models import sources
from core.runs.store import Store, config_hash

__all__ = ["key_of", "get", "put"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS reference_scores (key TEXT PRIMARY KEY, what TEXT, accuracy REAL, created REAL)"
_READY: set[str] = set()


def key_of(name: str, dataset: str, eval_limit: int | None, device_type: str, layout: tuple) -> dict | None:
    """What a stored score is keyed by, or None where it must not be kept."""
    if dataset.startswith("folder:"):
        return None
    model = sources.parse(name)
    if model.source not in ("zoo/", "paper/", "file:"):
        return None
    # torch's version too: a random control's weights come from torch's seeded initialisation
    return {"weights": sources.fingerprint(name), "model": str(model), "dataset": dataset, "images": eval_limit,
            "device_type": device_type, "layout": list(layout), "torch": metadata.version("torch")}


def get(store: Store, key: dict) -> float | None:
    try:
        with _tables(store).connect() as conn:
            row = conn.execute("SELECT accuracy FROM reference_scores WHERE key = ?", (config_hash(key),)).fetchone()
    except sqlite3.OperationalError:  # the store file was replaced under a long-lived worker: score again
        _READY.discard(str(store.path))
        return None
    return None if row is None else row[0]


def put(store: Store, key: dict, accuracy: float) -> None:
    with _tables(store).transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO reference_scores VALUES (?, ?, ?, ?)",
                     (config_hash(key), json.dumps(key, sort_keys=True), float(accuracy), time.time()))


def _tables(store: Store) -> Store:
    if str(store.path) not in _READY:
        store.add_tables(_SCHEMA)
        _READY.add(str(store.path))
    return store
