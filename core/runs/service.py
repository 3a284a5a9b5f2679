"""The runs service: the one door between the pages, the CLI, sweeps and the engine.

A *run* is one stored computation of a *kind* (``grid``, ``cka``, ...) with a configuration.
Its *identity* is the configuration plus what else changes its numbers (the weights'
fingerprints, and for grids the device type); the store finds a run by the hash of its
identity in one indexed query, however many runs it holds.

    find(store, "grid", config)                 # the stored run, or None (no torch imported)
    submit(store, "grid", [config, control])    # queue what is neither stored nor queued
    load(store, run_id)                         # a stored result, without recomputing

Each kind registers how to name its identity and how to execute a job of it (the worker
calls that); adding a computation means adding a :class:`Kind` here, nothing in the pages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from core.progress import CancelCheck, ProgressCallback, Status
from core.runs import jobs
from core.runs.store import Store, config_hash

__all__ = ["Kind", "KINDS", "DEVICE_TYPES", "kind_of", "register", "identity", "identity_key", "find", "submit",
           "load", "execute", "serve", "serving"]

DEVICE_TYPES = ("cpu", "cuda")  # what "auto" may resolve to in the worker


@dataclass(frozen=True)
class Kind:
    """One kind of computation.

    ``normalize(config)`` returns the configuration with its defaults filled in and checked
    (raises ``ValueError`` naming a bad field); ``identity(config, device_type)`` adds what
    else makes its numbers (``device_type`` None: the device-free identity used to de-duplicate
    queued jobs); ``execute(store, configs, options, progress, cancel)`` runs a job of
    ``configs`` and returns the first run id; ``load(store, run_id)`` reads a stored result."""

    name: str
    normalize: Callable[[dict], dict]
    identity: Callable[[dict, str | None], dict]
    execute: Callable[[Store, list[dict], dict, ProgressCallback, CancelCheck], str | None]
    load: Callable[[Store, str], object]
    device_bound: bool = False  # the device type is part of the identity (grids: bf16 on CUDA)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"unknown job kind {name!r}: one of {', '.join(KINDS)}")
    return KINDS[name]


def identity(kind: str, config: dict, device_type: str | None) -> dict:
    k = kind_of(kind)
    return k.identity(k.normalize(config), device_type if k.device_bound else None)


def identity_key(kind: str, config: dict) -> str:
    """The device-free identity's hash: one key per piece of work in the queue."""
    return config_hash({"kind": kind, **identity(kind, config, None)})


def _device_types(device: str) -> tuple[str, ...]:
    if device in ("auto", None):
        return DEVICE_TYPES
    return (str(device).split(":")[0],)


def find(store: Store, kind: str, config: dict, device: str = "auto",
         statuses: tuple[str, ...] | None = (Status.DONE,)) -> dict | None:
    """The newest stored run of this configuration on ``device`` ("auto": any device type), in
    one of ``statuses`` (None: any); one indexed query."""
    k = kind_of(kind)
    config = k.normalize(config)
    identities = ([k.identity(config, t) for t in _device_types(device)] if k.device_bound
                  else [k.identity(config, None)])
    return store.find_run(kind, identities, statuses)


def submit(store: Store, kind: str, configs: list[dict], device: str = "auto", owner: str | None = None,
           name: str | None = None) -> jobs.Queued:
    """Queue the ``configs`` that are neither stored finished nor queued or running already (from
    any session), as one job; returns what was queued and which active jobs hold the rest.
    Configurations that share a job share its passes over the data (a grid and its controls).
    A worker serves the queue (:func:`serve`; the app starts one with
    :func:`core.runs.jobs.ensure_worker`)."""
    k = kind_of(kind)
    configs = [k.normalize(c) for c in configs]
    todo = [c for c in configs if find(store, kind, c, device) is None]
    if not todo:
        return jobs.Queued(None)
    return jobs.submit(store, kind, todo, [identity_key(kind, c) for c in todo], {"device": device, "name": name},
                       owner)


def execute(store: Store, kind: str, configs: list[dict], options: dict, progress: ProgressCallback,
            cancel: CancelCheck) -> str | None:
    """Run one queued job (the worker's side of :func:`submit`); returns its first run id."""
    return kind_of(kind).execute(store, configs, options, progress, cancel)


def serve(db=None, **options) -> int:
    """Be the store's job worker (``python -m core worker``); see :func:`core.runs.jobs.run_worker`."""
    return jobs.run_worker(execute, db, **options)


@contextmanager
def serving(db, poll: float = 0.02, idle_exit: float = 0.2):
    """Serve the store's queue from a thread of this process while the block runs: a notebook, a
    test or a benchmark that wants the worker's code path without a worker process."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            serve(db, poll=poll, idle_exit=idle_exit)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def load(store: Store, run_id: str):
    """A stored run's result, as its kind reads it (a grid: :class:`core.engine.results.GridResult`)."""
    return kind_of(store.get_run(run_id)["kind"]).load(store, run_id)


# --- the kinds -------------------------------------------------------------------------------------
def _grid_normalize(config: dict) -> dict:
    from core.engine.results import GridConfig

    grid = GridConfig.from_dict(config)
    grid.validate()
    return asdict(grid)


def _grid_identity(config: dict, device_type: str | None) -> dict:
    from core.engine.results import GridConfig

    ident = GridConfig.from_dict(config).identity(device_type or "")
    if device_type is None:
        del ident["device_type"]
    return ident


def _grid_execute(store, configs, options, progress, cancel) -> str | None:
    from core.engine.grid import run_grids

    names = [options.get("name")] * len(configs)
    results = _with_oom_retry(lambda budget: run_grids(configs, store=store, device=options.get("device", "auto"),
                                                       progress=progress, cancel=cancel, names=names,
                                                       memory_fraction=budget))
    return results[0].run_id


def _with_oom_retry(run, budgets=(0.45, 0.2, 0.08)):
    """CUDA out of memory: retry with smaller fused chunks (results do not change), then give up."""
    import torch

    for k, budget in enumerate(budgets):
        try:
            return run(budget)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if k == len(budgets) - 1:
                raise RuntimeError("the GPU ran out of memory even with the smallest chunks; use fewer layers, "
                                   "a smaller batch size, or the CPU") from None


def _grid_load(store, run_id):
    from core.engine.results import load_grid

    return load_grid(store, run_id)


def _cka_execute(store, configs, options, progress, cancel) -> str | None:
    from core.runs.cka_runs import run_cka

    run_ids = [run_cka(c, store, options.get("device", "auto"), progress, cancel, options.get("name"))
               for c in configs]
    return run_ids[0] if run_ids else None


def _cka_kind() -> Kind:
    from core.runs import cka_runs

    return Kind("cka", cka_runs.cka_config_of, lambda config, _device: cka_runs.cka_identity(config), _cka_execute,
                cka_runs.load_cka)


def _similarity_execute(store, configs, options, progress, cancel) -> str | None:
    from core.runs.similarity_runs import run_similarity

    run_ids = run_similarity(configs, store, options.get("device", "auto"), progress, cancel, options.get("name"))
    return run_ids[0] if run_ids else None


def _similarity_kind() -> Kind:
    from core.runs import similarity_runs

    return Kind("similarity", similarity_runs.similarity_config_of,
                lambda config, _device: similarity_runs.similarity_identity(config), _similarity_execute,
                similarity_runs.load_similarity)


def _analysis_kind(name: str, make_config: str, run: str) -> Kind:
    """A kind of :mod:`core.runs.analysis` (predictions, attributions, stitch-cka)."""
    from core.runs import analysis as analysis_runs

    def execute(store, configs, options, progress, cancel):
        compute = getattr(analysis_runs, run)
        run_ids = [compute(c, store, options.get("device", "auto"), progress, cancel, options.get("name"))
                   for c in configs]
        return run_ids[0] if run_ids else None

    return Kind(name, lambda config: getattr(analysis_runs, make_config)(**config),
                lambda config, _device: analysis_runs.identity_of(name, config), execute, analysis_runs.load_artifact)


register(Kind("grid", _grid_normalize, _grid_identity, _grid_execute, _grid_load, device_bound=True))
register(_cka_kind())
register(_similarity_kind())
register(_analysis_kind("predictions", "predictions_config", "run_predictions"))
register(_analysis_kind("attributions", "attributions_config", "run_attributions"))
register(_analysis_kind("stitch-cka", "stitch_cka_config", "run_stitch_cka"))
