"""Shared fixtures. Every test session gets its own STITCHLAB_HOME, so nothing a test writes
(datasets unpacked, stores, uploads) touches the user's cache."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

_HOME = tempfile.mkdtemp(prefix="stitchlab-test-home-")
os.environ["STITCHLAB_HOME"] = _HOME
os.environ.pop("STITCHLAB_DB", None)
os.environ.pop("STITCHLAB_ZOO", None)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def home():
    return _HOME


@pytest.fixture(scope="session")
def r1111_pair():
    """Two seeds of the smallest zoo ResNet, loaded once for the session."""
    from core.models.network import cached_model

    return cached_model("zoo/resnet_1111-s0", "cpu"), cached_model("zoo/resnet_1111-s1", "cpu")


@pytest.fixture
def worker(tmp_path):
    """A store served by a worker thread (the same code the worker process runs)."""
    from core import runs
    from core.runs.store import Store

    store = Store(tmp_path / "jobs.sqlite3")
    with runs.serving(store.path):
        yield store


@pytest.fixture
def store(tmp_path):
    from core.runs.store import Store

    return Store(tmp_path / "results.sqlite3")


@pytest.fixture
def app_db(tmp_path, monkeypatch):
    """An empty store for AppTest pages; jobs stay queued (no worker process): a test runs them."""
    from core.runs import jobs

    db = tmp_path / "app.sqlite3"
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)
    return db


@pytest.fixture
def uploads_home(tmp_path, monkeypatch):
    """A home of its own: uploads made here neither see nor leave others'."""
    monkeypatch.setenv("STITCHLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "home" / "db.sqlite3"))
    return tmp_path / "home"
