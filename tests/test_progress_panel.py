"""The live progress panel, headless (AppTest): a job in progress keeps a spinner, every refresh."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core import paths
from core.runs import jobs

APP = str(paths.PROJECT_ROOT / "app.py")


def _status(node):
    for child in getattr(node, "children", {}).values():
        if type(child).__name__ == "Status":
            return child
        found = _status(child)
        if found is not None:
            return found
    return None


def test_a_job_in_progress_shows_a_spinner_at_every_refresh(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHLAB_DB", str(tmp_path / "panel.sqlite3"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: 0)  # the job stays queued
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(recipe="Instant (least squares)", budget="Quick: 2,000 training / 1,000 test images")
    at.run()
    next(b for b in at.button if b.label == "Run").click().run()
    for _ in range(3):  # the panel refreshes itself every second; each refresh is a run here
        status = _status(at._tree)
        assert status is not None, "no progress panel for the queued job"
        # leaving a `with st.status(...)` block marks it complete: a check mark flashed every second
        assert status.proto.icon == "spinner" and status.proto.state == status.proto.State.RUNNING, status.proto
        at.run()


def test_the_panel_asks_for_a_redraw_each_time_a_running_grid_stores_cells(tmp_path, monkeypatch):
    """The heatmap fills in while a grid runs: the panel (refreshed every second) reruns the
    page when the job's run has stored cells it has not drawn yet, and only then."""
    from core.runs.store import Store

    db = tmp_path / "cells.sqlite3"
    monkeypatch.setenv("STITCHLAB_DB", str(db))
    run_id = Store(db).create_run("grid", {"sender": "a", "receiver": "b"})

    def script():
        import streamlit as st

        from ui import jobs as ui_jobs

        st.session_state.answers = [*st.session_state.get("answers", []),
                                    ui_jobs._new_cells([{"kind": "grid", "run_id": st.session_state.run_id}])]

    at = AppTest.from_function(script, default_timeout=60)
    at.session_state.run_id = run_id
    at.run()
    Store(db).put_cell(run_id, "stem", "stem", "done", 0.5, {})
    at.run()
    at.run()
    Store(db).put_cell(run_id, "stem", "layer1.0", "done", 0.6, {})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state.answers == [False, True, False, True]
