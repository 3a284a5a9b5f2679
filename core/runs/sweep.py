"""Sweeps: many stitching grids, e.g. every ordered pair of the seed paper's 16 ResNets.

A sweep expands model patterns into (sender, receiver) pairs, crosses them with controls,
and runs one :func:`core.engine.grid.run_grid` per (sender, receiver, control). Two executors:

* ``local``: in this process, one grid after another, committing cells as run_grid does.
* ``ray``: one Ray task per grid (``num_gpus=1`` on CUDA, ``num_cpus=1`` otherwise). Only
  the driver (this process) writes the SQLite store: a worker runs ``run_grid(store=None)``
  and returns the :class:`~core.engine.grid.GridResult`, which :func:`commit_grid` writes as a grid
  run that :func:`core.engine.grid.load_grid` reads like a local one. The trained stitches travel
  back in ``GridResult.stitches`` (safetensors bytes, small), so Ray-computed cells are
  complete: metrics, details and weights.

Worker reuse: Ray keeps a task's worker process alive for the next task of the same function
and resources, so ``core.models.network.cached_model`` and core.data.datasets's caches load each network and
dataset once per worker. Ray makes GPU tasks single-use by default (``max_calls=1``, to free
GPU memory); the task here sets ``max_calls=0`` (reuse) and empties PyTorch's CUDA cache after
each grid instead.

Failures: a worker that dies (killed, out of host memory, node lost) is retried by Ray
(``max_retries``), and so are OSError and CUDA out-of-memory raised in the task (transient on
a shared file system or GPU). Any other exception is deterministic (bad model, nothing
stitchable, ...): it is not retried and the grid is recorded as failed with its message.
Either way only that grid is lost; rerunning the same sweep retries failed grids.

Resume: a sweep is found again by its settings. Grids whose run is ``done`` are skipped;
others resume through run_grid's own store resume (local) or are recomputed (Ray).

The sweep is itself a run of kind ``sweep``; its artifact ``grids`` lists every grid with
its run id, so :func:`sweep_status` can show progress from another process (the dashboard).
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import asdict, dataclass, field, fields

from core import paths
from core.engine.results import CONTROLS, MODES, REGIONS, GridConfig, depth_region, relative_depth
from core.errors import Cancelled
from core.models import sources, zoo
from core.progress import Status, check_cancel
from core.runs.sweep_tracking import Entry, Tracker, commit_grid, record_failure

# torch, the engine and ray are imported where a sweep runs, so the dashboard can read a
# sweep's status without paying for them.

__all__ = ["SweepConfig", "PAIRS", "EXECUTORS", "expand_models", "enumerate_pairs", "run_sweep", "commit_grid",
           "sweep_status", "sweep_summary", "depth_table", "paper_effect"]

PAIRS = ("all", "diagonal", "distinct")
EXECUTORS = ("local", "ray")
_GLOB = set("*?[")


# --- what a sweep is ----------------------------------------------------------------------------
def _registry() -> list[str]:
    paper = zoo.zoo_names(paths.home() / "zoo-paper")
    return [f"zoo/{n}" for n in zoo.zoo_names()] + [f"paper/{n}" for n in paper]


def expand_models(patterns: str | list[str]) -> list[str]:
    """Registry names matching fnmatch ``patterns`` (a list, or one comma-separated string).

    Names come in registry order, each once. A pattern without wildcards that is not a
    ``zoo/`` or ``paper/`` name (``torchvision/resnet18``, ``file:PATH``) is taken as it is.

    Example::

        >>> expand_models("zoo/resnet_1111-s*")
        ['zoo/resnet_1111-s0', 'zoo/resnet_1111-s1']
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    if not patterns:
        raise ValueError("no model pattern given; pass e.g. 'zoo/resnet_*-s0' (python -m core models lists them)")
    registry, out = _registry(), []
    for pattern in patterns:
        literal = not (_GLOB & set(pattern)) and sources.parse(pattern).source not in ("zoo/", "paper/")
        matched = [pattern] if literal else [n for n in registry if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(f"model pattern {pattern!r} matches no model; known: {', '.join(registry) or 'none'} "
                             f"(python -m core models lists them; paper/ models need: python -m core zoo train "
                             f"--preset paper)")
        out += [n for n in matched if n not in out]
    return out


def enumerate_pairs(models: list[str], pairs: str = "all") -> list[tuple[str, str]]:
    """Ordered (sender, receiver) pairs: ``all`` (n*n, self-pairs included, the seed paper's
    16x16), ``diagonal`` (n self-pairs) or ``distinct`` (n*(n-1), sender != receiver)."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    if pairs == "diagonal":
        return [(m, m) for m in models]
    return [(s, r) for s in models for r in models if pairs == "all" or s != r]


@dataclass
class SweepConfig:
    """A sweep's settings: which grids, and the settings every grid shares."""

    models: list[str]  # fnmatch patterns over registry names, e.g. ["paper/resnet_*"]
    pairs: str = "all"
    controls: list[str] = field(default_factory=lambda: ["none"])
    mode: str = "train"
    epochs: float = 1.0
    train_limit: int | None = None
    eval_limit: int | None = None
    dataset: str = "fashion-mnist"
    seed: int = 0
    grid: dict = field(default_factory=dict)  # any other GridConfig field (batch_size, lr, bn_before, ...)

    def validate(self) -> None:
        if self.pairs not in PAIRS:
            raise ValueError(f"unknown pairs {self.pairs!r}: choose one of {', '.join(PAIRS)}")
        if not self.controls:
            raise ValueError(f"no control given; choose from {', '.join(CONTROLS)}")
        for control in self.controls:
            if control not in CONTROLS:
                raise ValueError(f"unknown control {control!r}: choose from {', '.join(CONTROLS)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        shared = {f.name for f in fields(GridConfig)} - {"sender", "receiver", "control"}
        bad = set(self.grid) - shared
        if bad:
            raise ValueError(f"unknown grid settings {sorted(bad)}; known: {sorted(shared)}")

    def model_names(self) -> list[str]:
        return expand_models(self.models)

    def grids(self) -> list[GridConfig]:
        """One GridConfig per (control, sender, receiver): every real grid before any control, so
        a partial sweep already answers the main question."""
        self.validate()
        pairs = enumerate_pairs(self.model_names(), self.pairs)
        out = []
        for control in self.controls:
            for sender, receiver in pairs:
                config = GridConfig(sender=sender, receiver=receiver, control=control, mode=self.mode,
                                    epochs=self.epochs, train_limit=self.train_limit, eval_limit=self.eval_limit,
                                    dataset=self.dataset, seed=self.seed, **self.grid)
                config.validate()
                out.append(config)
        return out

    def identity(self, device_type: str) -> dict:
        """What finds this sweep again in the store: the settings, the models they expand to now,
        and the device type (which is part of every grid's identity too)."""
        return {**asdict(self), "model_names": self.model_names(), "device_type": device_type}


def run_sweep(config: SweepConfig | dict, store=None, executor: str = "local", device: str = "auto",
              name: str | None = None, ray_address: str | None = None, progress=None, cancel=None) -> dict:
    """Run (or resume) a sweep and return its :func:`sweep_status`.

    Args:
        config: a :class:`SweepConfig` (or a dict of its fields).
        store: the :class:`core.runs.store.Store` that records the sweep and its grids (default: the
            default database).
        executor: ``"local"`` (in process, one grid at a time) or ``"ray"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; with Ray, ``auto`` means CUDA when the
            cluster has GPUs.
        name: the sweep's name in the store.
        ray_address: a Ray cluster (``HEAD:6379``); None starts a small local Ray for the sweep.
        progress: called with a :class:`core.progress.Progress` whose ``counts`` are ``{"done",
            "failed", "total", "grid"}``; stage ``"grid"`` follows each finished grid.
        cancel: a callable returning True to stop, asked before every unit of work of every
            grid; the sweep is then ``cancelled`` and :class:`~core.errors.Cancelled` is raised.
            Ctrl-C does the same with KeyboardInterrupt.

    Rerunning a cancelled or failed sweep with the same settings resumes it.
    """
    from core.device import resolve_device
    from core.runs.store import Store

    config = config if isinstance(config, SweepConfig) else SweepConfig(**config)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if ray_address and executor != "ray":
        raise ValueError("a Ray address was given but the executor is not ray; add --executor ray")
    grids = config.grids()  # validates the settings and the model patterns before anything starts
    store = store if store is not None else Store()
    ray_started = False
    if executor == "ray":
        from core.runs.sweep_ray import start_ray  # imports ray: only when asked for

        device_type, ray_started = start_ray(ray_address, device)
    else:
        device_type = resolve_device(device).type
    try:
        return _run(config, grids, store, executor, device_type, name, progress, cancel)
    finally:
        if ray_started:
            import ray

            ray.shutdown()


def _run(config, grids, store, executor, device_type, name, progress, cancel) -> dict:
    identity = config.identity(device_type)
    previous = store.find_run("sweep", identity)
    if previous is None:
        sweep_id = store.create_run("sweep", identity, name)
    else:
        sweep_id = previous["id"]
        store.update_run(sweep_id, status=Status.RUNNING, message="resumed", **({"name": name} if name else {}))
    entries = []
    for grid in grids:
        entry = Entry(grid, grid.identity(device_type))
        found = store.find_run("grid", entry.identity)
        if found is not None:
            entry.run_id = found["id"]
            entry.state = "done" if found["status"] == Status.DONE else "pending"
        entries.append(entry)
    tracker = Tracker(store, sweep_id, entries, progress)
    tracker.flush()
    start = time.perf_counter()
    skipped = tracker.count("done")
    tracker.report("start", f"{len(entries)} grids, {skipped} already done")
    todo = [e for e in entries if e.state != "done"]
    label = name or (previous or {}).get("name") or "sweep"
    try:
        if executor == "local":
            _run_local(todo, store, device_type, tracker, label, cancel)
        else:
            from core.runs.sweep_ray import run_ray

            run_ray(todo, store, device_type, tracker, label, cancel)
    except (KeyboardInterrupt, Cancelled):
        for e in entries:
            if e.state == "running":
                e.state = "cancelled"
        tracker.flush()
        store.update_run(sweep_id, status=Status.CANCELLED, message="interrupted; rerun the same sweep to resume",
                         summary=_counts(entries))
        raise
    failed = tracker.count("failed")
    status = Status.FAILED if failed else Status.DONE
    message = f"{failed} of {len(entries)} grids failed; rerun the same sweep to retry them" if failed else None
    store.update_run(sweep_id, status=status, message=message, seconds=time.perf_counter() - start,
                     summary=_counts(entries))
    tracker.report("done", message or f"{len(entries)} grids done")
    return sweep_status(store, sweep_id)


def _counts(entries: list[Entry]) -> dict:
    return {"total": len(entries), "done": sum(e.state == "done" for e in entries),
            "failed": sum(e.state == "failed" for e in entries)}


# --- local executor -----------------------------------------------------------------------------
def _run_local(todo: list[Entry], store, device_type: str, tracker: Tracker, label: str, cancel) -> None:
    from core.engine.grid import run_grid

    for entry in todo:
        check_cancel(cancel)
        entry.state = "running"
        tracker.flush(force=False)
        tracker.report("grid-start", f"{entry.label()}: starting", entry=entry)

        def inner(event, entry=entry):
            if event.run_id and event.run_id != entry.run_id:  # known once run_grid has a run
                entry.run_id = event.run_id
                tracker.flush()
            tracker.report("grid-progress", f"{entry.label()}: {event.message}", event.fraction, entry)

        try:
            result = run_grid(entry.config, store=store, device=device_type, progress=inner, cancel=cancel,
                              name=f"{label}: {entry.label()}")
        except (KeyboardInterrupt, Cancelled):
            found = store.find_run("grid", entry.identity)  # run_grid marks an interrupted run failed
            if found is not None and found["status"] != Status.DONE:
                entry.run_id = found["id"]
                store.update_run(found["id"], status=Status.CANCELLED, message="sweep interrupted")
            raise
        except Exception as exc:  # this grid alone fails; a rerun of the sweep retries it
            entry.run_id = entry.run_id or (store.find_run("grid", entry.identity) or {}).get("id")
            record_failure(store, entry, tracker, label, f"{type(exc).__name__}: {exc}")
            continue
        tracker.finished(entry, "done", result.run_id)


# --- reading a sweep back -----------------------------------------------------------------------
def sweep_status(store, sweep_run_id: str) -> dict:
    """Progress of a sweep: counts of grids by status and one row per grid.

    A grid's status is its run's (``done``, ``failed``, ``cancelled``, ``running``), ``running``
    while the sweep has it in hand (under Ray: handed to Ray, perhaps still queued), else
    ``pending``.
    """
    run = store.get_run(sweep_run_id)
    if run["kind"] != "sweep":
        raise ValueError(f"run {sweep_run_id!r} is a {run['kind']} run, not a sweep; list sweeps with "
                         f"Store.list_runs('sweep')")
    entries = store.get_artifact(sweep_run_id, "grids", [])
    statuses = _run_statuses(store, [e["run_id"] for e in entries if e["run_id"]])
    live = run["status"] == "running"
    grids = []
    for e in entries:
        status = statuses.get(e["run_id"], "pending")
        if e["state"] == "running" and live:
            status = "running"
        elif status == "running" and not live:
            status = "cancelled"  # the sweep stopped without finishing this grid
        grids.append({"sender": e["sender"], "receiver": e["receiver"], "control": e["control"],
                      "run_id": e["run_id"], "status": status})
    count = {s: sum(g["status"] == s for g in grids) for s in ("done", "failed", "running", "pending", "cancelled")}
    return {"run_id": sweep_run_id, "name": run["name"], "status": run["status"], "message": run["message"],
            "config": run["config"], "total": len(grids), **count, "grids": grids}


def _run_statuses(store, run_ids: list[str]) -> dict:
    out = {}
    with store.connect() as conn:
        for k in range(0, len(run_ids), 500):  # SQLite caps the number of bound parameters
            chunk = run_ids[k:k + 500]
            rows = conn.execute(f"SELECT id, status FROM runs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            out.update({r["id"]: r["status"] for r in rows})
    return out


def sweep_summary(store, sweep_run_id: str) -> list[dict]:
    """One row per scored cell of the sweep's grids: the layers' relative depths (index /
    (layers - 1), 0 = first layer of the grid, 1 = last) and the stitched accuracy.

    Row keys: sender, receiver, control, run_id, sender_layer, receiver_layer, sender_depth,
    receiver_depth, accuracy, reference_accuracy (the pretrained receiver's).
    """
    rows = []
    for grid in sweep_status(store, sweep_run_id)["grids"]:
        if grid["run_id"] is None or grid["status"] == "pending":
            continue
        summary = store.get_run(grid["run_id"])["summary"]
        s_index = {n: k for k, n in enumerate(summary.get("sender_layers", []))}
        r_index = {n: k for k, n in enumerate(summary.get("receiver_layers", []))}
        for c in store.cells(grid["run_id"], with_details=False):
            if c["status"] != "done" or c["accuracy"] is None or c["sender_layer"] not in s_index \
                    or c["receiver_layer"] not in r_index:
                continue
            rows.append({"sender": grid["sender"], "receiver": grid["receiver"], "control": grid["control"],
                         "run_id": grid["run_id"], "sender_layer": c["sender_layer"],
                         "receiver_layer": c["receiver_layer"],
                         "sender_depth": relative_depth(s_index[c["sender_layer"]], len(s_index)),
                         "receiver_depth": relative_depth(r_index[c["receiver_layer"]], len(r_index)),
                         "accuracy": c["accuracy"], "reference_accuracy": summary.get("reference_accuracy")})
    return rows


def depth_table(summary: list[dict], bins: int = 4) -> list[dict]:
    """Mean stitched accuracy by (sender depth bin, receiver depth bin, control).

    Bin k covers relative depths [k/bins, (k+1)/bins), the last one including 1. Rows:
    control, sender_bin, receiver_bin, mean_accuracy, cells.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    groups: dict[tuple, list[float]] = {}
    for row in summary:
        key = (row["control"], min(int(row["sender_depth"] * bins), bins - 1),
               min(int(row["receiver_depth"] * bins), bins - 1))
        groups.setdefault(key, []).append(row["accuracy"])
    return [{"control": c, "sender_bin": s, "receiver_bin": r, "mean_accuracy": sum(v) / len(v), "cells": len(v)}
            for (c, s, r), v in sorted(groups.items())]


def paper_effect(summary: list[dict]) -> dict:
    """The seed paper's finding, per control: mean stitched accuracy where the sender layer is
    relatively deeper than the receiver layer (``lower_left``, with sender layers as rows),
    shallower (``upper_right``) and equally deep (``diagonal``).

    Returns ``{control: {region: {"mean_accuracy": float | None, "cells": int}}}``.
    """
    groups: dict[str, dict[str, list[float]]] = {}
    for row in summary:
        region = depth_region(row["sender_depth"], row["receiver_depth"])
        groups.setdefault(row["control"], {r: [] for r in REGIONS})[region].append(row["accuracy"])
    return {control: {region: {"mean_accuracy": sum(v) / len(v) if v else None, "cells": len(v)}
                      for region, v in regions.items()} for control, regions in groups.items()}
