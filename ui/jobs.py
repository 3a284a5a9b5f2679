"""Submitting work to the background worker, and the live progress panel.

Pages call :func:`submit`; :func:`progress_panel` polls the session's jobs once a second in a
fragment (only the panel reruns), shows progress, ETA and a Cancel button, and reruns the
whole page when a job finishes so its results appear.
"""

from __future__ import annotations

import streamlit as st

from core import runs
from core.errors import DeviceUnavailable, QueueFull
from core.progress import Status
from core.runs import jobs

from .state import session_id, store
from .text import plain


def submit(kind: str, configs: list[dict], device: str) -> bool:
    """Queue the work of ``configs`` not stored or queued yet, and follow every job that holds
    some of it (this session's or another's): a second click never queues twice. Shows an
    error when the queue is full. True if a job was queued."""
    try:
        queued = runs.submit(store(), kind, configs, device, owner=session_id())
    except QueueFull as exc:
        st.error(str(exc))
        return False
    if queued.job_ids:  # also when following: a job whose worker died is recovered and served again
        jobs.ensure_worker(store().path)
    for job_id in queued.job_ids:
        watch(job_id)
    return queued.job_id is not None


def request(kind: str, config: dict, device: str) -> None:
    """Queue work the page needs to show anything (attributions of the image in view) without a
    click, once per browser session: a job that failed is not queued again by the reruns that
    follow (its error shows; a click on a button of the page asks again)."""
    asked = st.session_state.setdefault("requested_work", set())
    key = runs.identity_key(kind, config)
    if key not in asked:
        asked.add(key)
        submit(kind, [config], device)


def watch(job_id: int) -> None:
    """Follow a job (this session's or another's) in the progress panel."""
    watched = st.session_state.setdefault("watched_jobs", [])
    if job_id not in watched:
        watched.append(job_id)


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
        (still if job["status"] in Status.active() else finished).append(job)
    if still and jobs.worker_pid(store().path) is None:  # its worker died: recover the job, start another
        jobs.ensure_worker(store().path)
    for job in still:
        _job_status(job)
    if _new_cells(still):  # the heatmap fills in while the grid runs
        st.rerun(scope="app")
    if finished:
        st.session_state.watched_jobs = [j["id"] for j in still]
        for job in finished:
            if job["status"] == Status.FAILED:
                st.session_state.setdefault("job_errors", []).append(job)
        st.rerun(scope="app")


def _new_cells(jobs_running: list[dict]) -> bool:
    """True when a running grid job's run has stored cells since this session last drew them
    (one query for all of them; every count kept, so one new cell asks for one redraw)."""
    run_ids = [job["run_id"] for job in jobs_running if job["kind"] == "grid" and job.get("run_id")]
    if not run_ids:
        return False
    counts = store().cell_counts(run_ids)
    seen = st.session_state.setdefault("cells_drawn", {})
    fresh = any(counts.get(run_id, 0) > seen.get(run_id, 0) for run_id in run_ids)
    seen.update({run_id: counts.get(run_id, 0) for run_id in run_ids})
    return fresh


def _job_status(job: dict) -> None:
    what = _describe(job)
    if job["status"] == Status.QUEUED:
        label = f"Waiting: {what}" + (f" ({job['ahead']} job(s) ahead)" if job["ahead"] else "")
    else:
        label = f"Running: {what}"
    # Not ``with st.status(...)``: leaving that block marks the status complete, so the icon
    # flipped between a check mark and a spinner at every refresh of the panel.
    box = st.status(label, expanded=True, state="running")
    box.progress(min(max(job["progress"] or 0.0, 0.0), 1.0), text=f"{job['message'] or ''} · {_eta(job['eta'])}")
    if box.button("Cancel", key=f"cancel_{job['id']}"):
        jobs.cancel(store(), job["id"])
        st.toast("Cancelling: finished cells are kept.")


def _describe(job: dict) -> str:
    configs = job["params"]["configs"]
    first = configs[0]
    if job["kind"] == "grid":
        more = f" and {len(configs) - 1} control grid(s)" if len(configs) > 1 else ""
        return f"{first['sender']} → {first['receiver']}, {first.get('mode', 'train')}{more}"
    if job["kind"] == "cka":
        return f"CKA {first.get('model_a')} vs {first.get('model_b')}"
    if job["kind"] == "similarity":
        measures = ", ".join(dict.fromkeys(m for c in configs for m in c.get("measures", [])))
        return f"Similarity ({measures}) {first.get('model_a')} vs {first.get('model_b')}"
    return job["kind"]


def show_errors() -> None:
    """Failed jobs of this session, each once, as one clear message."""
    for job in st.session_state.pop("job_errors", []):
        # The engine's neutral words for a missing GPU, in the dashboard's terms.
        message = (job["message"] or "").replace(DeviceUnavailable.FIX, "pick cpu or auto as Device in the sidebar")
        st.error(f"{plain(_describe(job))} failed: {plain(message)}")

