"""The Ray executor of sweeps: one Ray task per grid, results back to the driver.

Only the driver (this process) writes the SQLite store: a worker runs ``run_grid(store=None)``
and returns its :class:`~core.engine.results.GridResult`, which :func:`core.runs.sweep.commit_grid` writes
as a grid run that :func:`core.engine.grid.load_grid` reads like a local one. See :mod:`core.runs.sweep`
for worker reuse and retries. Ray is imported only here, and only when a sweep uses it.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from core import paths
from core.engine.results import GridConfig
from core.progress import check_cancel
from core.runs.sweep_tracking import MAX_RETRIES, Entry, Tracker, commit_grid, record_failure

__all__ = ["run_ray", "start_ray"]


def _grid_task(config: dict, device: str) -> dict:
    """One grid in a Ray worker: no store; the driver commits the result."""
    import socket

    import torch

    from core.engine.grid import run_grid

    result = run_grid(config, store=None, device=device)
    identity = GridConfig.from_dict(config).identity(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the worker is reused: keep the models, give back cached blocks
    return {"result": result, "identity": identity, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def start_ray(address: str | None, device: str) -> tuple[str, bool]:
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install -r requirements-ray.txt "
                         "(or use --executor local)") from None

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} for Ray: use auto, cpu or cuda")
    started = False
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ValueError(f"cannot join the Ray cluster at {address!r} ({exc}); start it with "
                                 f"'ray start --head' there, or leave out --ray-address for a local Ray") from None
        else:
            ray.init(num_cpus=max(1, min(2, os.cpu_count() or 1)), include_dashboard=False, log_to_driver=False)
            started = True
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "auto":
        return ("cuda" if gpus else "cpu"), started
    if device == "cuda" and not gpus:
        if started:
            ray.shutdown()
        raise ValueError("device 'cuda' was asked for but the Ray cluster has no GPU; use --device cpu or auto")
    return device, started


def _check_reachable(address: str) -> None:
    """Fail in seconds on a wrong address; ray.init waits minutes for a head that is not there."""
    import socket

    if "://" in address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not HOST:PORT, e.g. 10.0.0.1:6379 (what 'ray start --head' "
                         f"printed)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ValueError(f"cannot reach the Ray cluster at {address} ({exc}); start it with 'ray start --head' "
                         f"there, or leave out --ray-address for a local Ray") from None


def _remote(task, device_type: str):
    import ray
    import torch

    resources = {"num_cpus": 1, "num_gpus": 1 if device_type == "cuda" else 0}
    # Workers import core from the repository: at the driver's path unless PYTHONPATH says otherwise.
    runtime_env = {"env_vars": {"PYTHONPATH": f"{paths.PROJECT_ROOT}{os.pathsep}${{PYTHONPATH}}"}}
    return ray.remote(max_calls=0, max_retries=MAX_RETRIES, retry_exceptions=[OSError, torch.OutOfMemoryError],
                      runtime_env=runtime_env, **resources)(task)


def run_ray(todo: list[Entry], store, device_type: str, tracker: Tracker, label: str, cancel) -> None:
    import ray

    remote = _remote(_grid_task, device_type)
    slots = int(ray.cluster_resources().get("GPU" if device_type == "cuda" else "CPU", 1)) or 1
    window = 2 * slots  # grids handed to Ray at a time: every slot busy, plus one queued each
    queue, inflight = list(todo), {}
    try:
        while queue or inflight:
            while queue and len(inflight) < window:
                entry = queue.pop(0)
                entry.state = "running"
                inflight[remote.remote(asdict(entry.config), device_type)] = entry
            tracker.flush(force=False)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            check_cancel(cancel)
            for ref in ready:
                _collect(ref, inflight.pop(ref), store, tracker, label)
    except BaseException:
        for ref, entry in inflight.items():
            ray.cancel(ref)
            entry.state = "cancelled"
        raise


def _collect(ref, entry: Entry, store, tracker: Tracker, label: str) -> None:
    import ray

    try:
        out = ray.get(ref)
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None) or exc
        first = (str(cause).strip().splitlines() or [""])[0]
        record_failure(store, entry, tracker, label, f"{type(cause).__name__}: {first}")
        return
    if out["identity"] != entry.identity:
        record_failure(store, entry, tracker, label,
                        f"worker {out['worker']} has other weights than the driver for {entry.label()}; "
                        f"give every machine the same zoo")
        return
    run_id = commit_grid(store, entry.config, entry.identity, out["result"], entry.run_id,
                         name=f"{label}: {entry.label()}")
    tracker.finished(entry, "done", run_id)
