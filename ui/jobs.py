"""Submitting work to the background worker, and the live progress panel.

Pages call :func:`submit`; :func:`progress_panel` polls the session's jobs once a second in a
fragment (only the panel reruns), shows progress, ETA and a Cancel button, and reruns the
whole page when a job finishes so its results appear.
"""

from __future__ import annotations

import streamlit as st

from core import jobs

from .state import session_id, store


def submit(kind: str, params: dict) -> int | None:
    """Queue a job for this session; shows an error (and returns None) if the queue is full."""
    try:
        job_id = jobs.submit(store(), kind, params, owner=session_id())
    except jobs.QueueFull as exc:
        st.error(str(exc))
        return None
    jobs.ensure_worker(store().path)
    watch(job_id)
    return job_id


def watch(job_id: int) -> None:
    """Follow a job (this session's or another's) in the progress panel."""
    watched = st.session_state.setdefault("watched_jobs", [])
    if job_id not in watched:
        watched.append(job_id)


def submit_once(kind: str, params: dict) -> int | None:
    """:func:`submit`, unless a job of this kind with these parameters (on any device) is queued or
    running already, from any session: then watch that one. A second click never queues twice."""
    def same(p: dict) -> bool:
        return {k: v for k, v in p.items() if k != "device"} == {k: v for k, v in params.items() if k != "device"}

    for job in jobs.list_jobs(store(), active_only=True):
        if job["kind"] == kind and same(job["params"]):
            watch(job["id"])
            return job["id"]
    return submit(kind, params)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.1f} min left"


@st.fragment(run_every=1.0)
def progress_panel() -> None:
    """Progress of this session's unfinished jobs; reruns the page when one finishes."""
    watched = st.session_state.get("watched_jobs", [])
    if not watched:
        return
    finished, still = [], []
    for job_id in watched:
        try:
            job = jobs.get(store(), job_id)
        except KeyError:
            continue
        (still if job["status"] in jobs.ACTIVE else finished).append(job)
    for job in still:
        _job_status(job)
    if finished:
        st.session_state.watched_jobs = [j["id"] for j in still]
        for job in finished:
            if job["status"] == "failed":
                st.session_state.setdefault("job_errors", []).append(job)
        st.rerun(scope="app")


def _job_status(job: dict) -> None:
    what = _describe(job)
    if job["status"] == "queued":
        label = f"Waiting: {what}" + (f" ({job['ahead']} job(s) ahead)" if job["ahead"] else "")
    else:
        label = f"Running: {what}"
    with st.status(label, expanded=True, state="running"):
        st.progress(min(max(job["progress"] or 0.0, 0.0), 1.0),
                    text=f"{job['message'] or ''} · {_eta(job['eta'])}")
        if st.button("Cancel", key=f"cancel_{job['id']}"):
            jobs.cancel(store(), job["id"])
            st.toast("Cancelling: finished cells are kept.")


def _describe(job: dict) -> str:
    p = job["params"]
    if job["kind"] == "grid":
        grids = p.get("configs", [p])
        first, more = grids[0], f" and {len(grids) - 1} control grid(s)" if len(grids) > 1 else ""
        return f"{first['sender']} → {first['receiver']}, {first.get('mode', 'train')}{more}"
    if job["kind"] == "cka":
        return f"CKA {p.get('model_a')} vs {p.get('model_b')}"
    return job["kind"]


def show_errors() -> None:
    """Failed jobs of this session, each once, as one clear message."""
    for job in st.session_state.pop("job_errors", []):
        st.error(f"{_describe(job)} failed: {job['message']}")

