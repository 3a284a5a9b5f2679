"""Seconds from Cancel to the job's end, per phase, as a user of the dashboard waits for them.

A worker (the dashboard's code, in a thread) serves a fresh store; for each phase a job is
queued, Cancel is pressed (``core.runs.jobs.cancel``, what the Cancel button calls) once the job's
row says it is in that phase, and the time until the row says ``cancelled`` is measured.
Phases: scoring the networks on their own (``reference``), least squares (``lstsq``), task-loss
training (``train``), scoring the stitches (``evaluate``), a CKA matrix (``cka``). The default
pair of the Stitching page, zoo/resnet_1111-s0 -> zoo/resnet_2222-s0, all 45 cells.

    python -m bench.cancel_latency [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ._util import emit

SENDER, RECEIVER = "zoo/resnet_1111-s0", "zoo/resnet_2222-s0"
# phase -> (kind, recipe or CKA settings, what the job's message says while in that phase)
PHASES = {
    "reference": ("grid", ("instant", "full"), "on its own"),
    "lstsq": ("grid", ("instant", "quick"), "least squares: batch"),
    "train": ("grid", ("paper", "quick"), "training: step"),
    "evaluate": ("grid", ("instant", "quick"), "scoring the stitches"),
    "cka": ("cka", {"limit": 10000}, "CKA: batch"),
}


def _config(kind: str, settings, seed: int) -> dict:
    from core.runs import recipes
    from core.runs.cka_runs import cka_config

    if kind == "grid":
        return recipes.grid_config(SENDER, RECEIVER, *settings, seed=seed)
    return cka_config(SENDER, RECEIVER, batch_size=250 + seed, **settings)  # another identity each repeat


def _cancel_once_in(store, job_id: int, says: str, timeout: float = 600.0) -> tuple[float, str]:
    """Cancel when the job's message says ``says``; seconds until it is cancelled, and its last message."""
    from core.runs import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(store, job_id)
        if job["status"] not in ("queued", "running"):
            raise RuntimeError(f"job {job_id} ended ({job['status']}: {job['message']}) before the phase {says!r}")
        if says in (job["message"] or ""):
            break
        time.sleep(0.02)
    pressed = time.monotonic()
    jobs.cancel(store, job_id)
    while jobs.get(store, job_id)["status"] in ("queued", "running"):
        time.sleep(0.01)
    return time.monotonic() - pressed, job["message"]


def main(argv=None) -> dict:
    from core import runs
    from core.models import network
    from core.runs.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="stitchlab-bench-cancel-"))
    os.environ["STITCHLAB_HOME"] = str(home)
    store = Store(home / "cancel.sqlite3")
    figures = {}
    with runs.serving(store.path, poll=0.01, idle_exit=0.5):
        for phase in args.phases.split(","):
            kind, settings, says = PHASES[phase]
            seconds, messages = [], []
            for repeat in range(args.repeats):
                network._cached_model.cache_clear()  # a fresh worker: nothing scored or loaded yet
                queued = runs.submit(store, kind, [_config(kind, settings, repeat)], "cpu")
                took, message = _cancel_once_in(store, queued.job_id, says)
                seconds.append(round(took, 3))
                messages.append(message)
            figures[phase] = {"seconds": seconds, "median_s": statistics.median(seconds), "at": messages}
            print(phase, figures[phase], flush=True)
    return emit("cancel_latency", torch.device("cpu"), pair=f"{SENDER} -> {RECEIVER}", phases=figures)


if __name__ == "__main__":
    main()
