"""Stitching grids: every (sender layer i, receiver layer j) pair, trained and scored together.

:func:`run_grid` is the one entry point. It loads the two networks (or their random
controls), lists the layers, builds one stitch per pair, splits the pairs into chunks that fit
in memory, and for each chunk trains and/or least-squares fits the stitches in one fused pass
(:mod:`core.engine.fused`), scores them on the test split and commits every cell to the store.

What a grid is (config, result, metrics) lives in :mod:`core.engine.results`.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from dataclasses import asdict

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from core.data.datasets import ImageSet, load_dataset
from core.device import autocast_for, resolve_device
from core.engine.fused import Cell, FusedStitches, engine_network
from core.engine.layers import Layer, layer_graph, list_layers, resolve_layer
from core.engine.options import EngineOptions
from core.engine.results import CONTROLS, MODES, GridConfig, GridResult, load_grid, summarize
from core.engine.stitches import Stitch, make_stitch
from core.errors import NotStitchable
from core.models.network import Network, cached_model
from core.models.sources import random_name
from core.progress import Reporter, Status, check_cancel
from core.runs import reference_scores
from core.runs.lifecycle import lifecycle

__all__ = ["GridConfig", "GridResult", "run_grid", "run_grids", "load_grid", "MODES", "CONTROLS",
           "evaluate_network"]


def evaluate_network(net: Network, data: ImageSet, device: torch.device, batch_size: int = 1000,
                     amp: bool | None = None, cancel=None) -> float:
    """Top-1 accuracy of ``net`` on ``data`` (``cancel`` is asked before every batch)."""
    correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: no sync per batch
    with torch.no_grad(), autocast_for(device, amp):
        for images, labels in data.batches(batch_size, device):
            check_cancel(cancel)
            correct += (net(images).argmax(-1) == labels).sum()
    return correct.item() / max(1, len(data))


def networks_of(config: GridConfig, device: torch.device):
    """(sender used, receiver used, pretrained receiver) for the control."""
    dev = str(device)
    sender, receiver = cached_model(config.sender, dev), cached_model(config.receiver, dev)
    used_sender = cached_model(random_name(config.sender, config.seed), dev) \
        if config.control in ("random-sender", "random-both") else sender
    # seed + 1: when sender and receiver are the same architecture, the two random copies differ.
    used_receiver = cached_model(random_name(config.receiver, config.seed + 1), dev) \
        if config.control in ("random-receiver", "random-both") else receiver
    return used_sender, used_receiver, receiver


def _layers(net: Network, names: list[str] | None) -> list[Layer]:
    if not names:
        return list_layers(net)
    return [resolve_layer(net, n) for n in names]


def _cell_seed(seed: int, i: str, j: str) -> int:
    return zlib.crc32(f"{seed}:{i}:{j}".encode())


def _plan_chunks(cells: list[Cell], device: torch.device, batch_size: int, backward: bool,
                 memory_fraction: float = 0.45) -> list[list[Cell]]:
    """Group cells (in receiver-layer order) so each chunk's activations fit in memory.

    Fewer chunks means fewer sender passes; with ``backward`` the activations of the
    receiver's suffix are kept for the backward pass, hence the larger estimate."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, bytes_per = memory_fraction * free, 2
    else:  # STITCHLAB_CPU_CHUNK_MB: lower it on a small machine (1: one stitch per chunk)
        # The estimate counts every node after the cut, while autograd keeps far less for frozen
        # convolutions: all 45 training cells of the zoo's default pair are estimated at 22.7 GB
        # and peaked at 3.0 GB above the process's baseline. 4000 (estimated) MB measured 1.8 GB
        # of resident memory in all; fewer chunks mean fewer sender passes (Standard recipe: 73.5 s
        # in 7 chunks against 86.2 s in the 20 chunks of a 1500 MB budget; python -m bench.recipes).
        budget, bytes_per = float(os.environ.get("STITCHLAB_CPU_CHUNK_MB", "4000")) * 1e6, 4
    chunks, current, used = [], [], 0.0
    for cell in cells:
        graph = layer_graph(cell.receiver.module, cell.receiver.input_shape)
        cut = cell.receiver_layer.depth
        sizes = [math.prod(n.meta["tensor_meta"].shape[1:])
                 for n in graph.nodes[cut:] if hasattr(n.meta.get("tensor_meta"), "shape")] or [0]
        # activations kept for backward and their gradients; without backward, about two live at a time
        cost = (3 * sum(sizes) if backward else 2 * max(sizes)) * batch_size * bytes_per
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], 0.0
        current.append(cell)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def _stitch_bytes(stitch: Stitch) -> bytes:
    return save_safetensors({k: v.detach().float().cpu().contiguous() for k, v in stitch.state_dict().items()})


def load_stitch(details: dict, blob: bytes) -> Stitch:
    """Rebuild a trained stitch from a stored cell's details and weights."""
    stitch = Stitch(details["sender_shape"], details["receiver_shape"], details.get("bn_before", False),
                    details.get("bn_after", False), max_params=10**12)
    stitch.load_state_dict(load_safetensors(blob))
    return stitch.eval()


def run_grid(config: GridConfig | dict, store=None, device: str | torch.device = "auto", progress=None,
             cancel=None, name: str | None = None, reuse: bool = True, memory_fraction: float = 0.45,
             engine: EngineOptions | dict | None = None) -> GridResult:
    """Train and score a stitching grid; see the module docstring.

    Args:
        config: a :class:`GridConfig` (or a dict of its fields).
        store: a :class:`core.runs.store.Store` to commit cells to, resume from and reuse results from.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        progress: called with a :class:`core.progress.Progress` as work advances.
        cancel: a callable returning True to stop, asked before every training step, scoring
            batch and least-squares batch; finished cells stay in the store, and
            :class:`core.errors.Cancelled` is raised.
        reuse: with a store, return a finished run of the same configuration without recomputing,
            and resume an unfinished one.
        memory_fraction: share of free GPU memory one fused chunk may use (smaller: more, smaller
            chunks; the results are the same). The job runner lowers it after an out-of-memory.
        engine: speed options, an :class:`core.engine.options.EngineOptions` or a dict of its fields
            (``fold_bn``, ``autotune``, ...); they change no result beyond float rounding.

    Example::

        >>> result = run_grid({"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1",
        ...                    "mode": "lstsq", "eval_limit": 1000})
        >>> result.matrix("accuracy")[0][0]
        0.81
    """
    return run_grids([config], store, device, progress, cancel, [name], reuse, memory_fraction, engine)[0]


def run_grids(configs: list[GridConfig | dict], store=None, device: str | torch.device = "auto", progress=None,
              cancel=None, names: list[str | None] | None = None, reuse: bool = True, memory_fraction: float = 0.45,
              engine: EngineOptions | dict | None = None) -> list[GridResult]:
    """Several grids at once, e.g. a grid and its random controls: grids that train alike (same
    recipe, data and seed) share one pass over the data, one fused chunk plan, and each
    network's prefix pass. Each grid is still its own run in the store. Arguments as :func:`run_grid`."""
    configs = [c if isinstance(c, GridConfig) else GridConfig.from_dict(c) for c in configs]
    for config in configs:
        config.validate()
    names = list(names or [None] * len(configs))
    device = resolve_device(device)
    results: list[GridResult | None] = [None] * len(configs)
    groups: dict[tuple, list[int]] = {}
    for k, config in enumerate(configs):
        groups.setdefault(_training_signature(config), []).append(k)
    start = time.perf_counter()
    for g, members in enumerate(groups.values()):
        report = Reporter(progress, start, g / len(groups), (g + 1) / len(groups))
        jobs = [_GridJob(configs[k], names[k]) for k in members]
        _run_group(jobs, store, device, report, cancel, reuse, memory_fraction, EngineOptions.coerce(engine))
        for k, job in zip(members, jobs):
            results[k] = job.result
    return results


_SHARED_FIELDS = ("mode", "dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "train_limit",
                  "eval_limit", "seed", "bn_before", "bn_after", "lstsq_rows", "lstsq_images", "precondition",
                  "lr_schedule")


def _training_signature(config: GridConfig) -> tuple:
    return tuple(getattr(config, f) for f in _SHARED_FIELDS)


class _GridJob:
    """One grid inside a group: its networks, layers, pairs, result and run."""

    def __init__(self, config: GridConfig, name: str | None):
        self.config, self.name = config, name
        self.run_id, self.done = None, {}
        self.finished = False  # complete: reused from the store, or computed to the end

    def setup(self, device, life, reuse: bool, test: ImageSet) -> None:
        config = self.config
        self.sender, self.receiver, self.real_receiver = networks_of(config, device)
        s_layers, r_layers = _layers(self.sender, config.sender_layers), _layers(self.receiver, config.receiver_layers)
        self.wanted = _pairs(config, s_layers, r_layers)
        if self.real_receiver.num_classes != test.info.num_classes:
            raise ValueError(f"receiver {config.receiver} predicts {self.real_receiver.num_classes} classes but "
                             f"{config.dataset} has {test.info.num_classes}; stitching is scored on the receiver's "
                             f"task, so pick a receiver trained on {config.dataset}")
        self.result = GridResult(asdict(config), [lay.name for lay in s_layers], [lay.name for lay in r_layers],
                                 [list(lay.shape) for lay in s_layers], [list(lay.shape) for lay in r_layers])
        self.run_id, previous = life.open("grid", config.identity(device.type), self.name, reuse)
        if previous is not None:
            self.done = {(c["sender_layer"], c["receiver_layer"]): c for c in life.store.cells(self.run_id)}
            if previous["status"] == Status.DONE and set(self.done) >= {(s.name, r.name) for s, r in self.wanted}:
                self.result, self.finished = load_grid(life.store, self.run_id, reused=True), True
                life.finished(self.run_id)
                return
        self.result.run_id = self.run_id
        self.result.cells.update(self.done)

    def cells(self, store) -> list[Cell]:
        """A fresh stitch per pair still to compute; not-stitchable pairs are committed at once."""
        config, cells = self.config, []
        for s_layer, r_layer in self.wanted:
            key = (s_layer.name, r_layer.name)
            try:
                stitch = make_stitch(s_layer.shape, r_layer.shape, config.bn_before, config.bn_after,
                                     config.max_stitch_params, _cell_seed(config.seed, *key))
            except NotStitchable as exc:
                if key not in self.done:
                    _commit(store, self.run_id, self.result, key, "not_stitchable", None, {"reason": str(exc)})
                continue
            cells.append(Cell(self.sender, self.receiver, s_layer, r_layer, stitch, owner=self))
        if not cells and self.wanted and not self.done:
            first = next(iter(self.result.cells.values()))["details"]["reason"]
            raise ValueError(f"no pair of this grid is stitchable ({first}); pick other layers, or allow larger "
                             f"stitches with max_stitch_params")
        return cells


# Each phase's share of a chunk's progress bar, from its measured cost on two CPU cores (the
# zoo's default pair): scoring took 40-50 % of an Instant grid, least squares the rest.
_SHARES = {"lstsq": {"lstsq": 0.55, "evaluate": 0.45},
           "train": {"train": 0.85, "evaluate": 0.15},
           "lstsq+train": {"lstsq": 0.15, "train": 0.72, "evaluate": 0.13}}


def _run_group(jobs: list[_GridJob], store, device, report, cancel, reuse, memory_fraction, engine) -> None:
    config = jobs[0].config  # the training signature is shared
    report("load", 0.0, "loading " + ", ".join(sorted({f"{j.config.sender} and {j.config.receiver}" for j in jobs})))
    test = load_dataset(config.dataset, "test", config.eval_limit)
    if sum(1 for c in test.class_counts() if c) < 2:
        raise ValueError(f"the {config.dataset} test split has fewer than two classes with images; accuracy would be "
                         f"meaningless")
    with lifecycle(store) as life:
        for job in jobs:
            check_cancel(cancel)
            job.setup(device, life, reuse, test)
        active = [job for job in jobs if not job.finished]
        if not active:
            return
        report.run_id = active[0].run_id
        _compute_group(config, active, store, device, report, cancel, memory_fraction, engine, test)
        for job in active:
            job.result.seconds = time.perf_counter() - report.start
            job.result.status, job.finished = Status.DONE, True
            # The seconds are the shared pass's, for every grid in it: grids_in_job says how many shared them.
            life.done(job.run_id, seconds=job.result.seconds,
                      summary={**summarize(job.result), "grids_in_job": len(active)})
        report("done", 1.0, "finished")


def _compute_group(config, active, store, device, report, cancel, memory_fraction, engine, test) -> None:
    test_dev = test.to(device)
    batch = _eval_batch(device)
    layout = (engine.fold_bn, engine.channels_last is not False)
    networks = list({id(net): net for job in active for net in (job.sender, job.receiver, job.real_receiver)}.values())

    def score(n, net):
        # Once per network and test set, also across grids (net.scores lives as long as the
        # loaded model: 0.5 s of a warm 10 s Instant grid on two CPU cores, BENCHMARKS.md).
        report("reference", 0.01 * n / len(networks), f"scoring {net.name} on its own")
        key = (config.dataset, config.eval_limit, str(device), *layout)
        stored_key = _stored_score_key(net, config, device, layout) if store is not None else None
        if key not in net.scores and stored_key is not None:  # scored by an earlier worker
            net.scores[key] = reference_scores.get(store, stored_key)
        if net.scores.get(key) is None:  # scored on the copy the fused passes use too
            copy = engine_network(net, fold_bn=layout[0], channels_last=layout[1])
            net.scores[key] = evaluate_network(copy, test_dev, device, batch, cancel=cancel)
            if stored_key is not None:
                reference_scores.put(store, stored_key, net.scores[key])
        return net.scores[key]

    scores = {id(net): score(n, net) for n, net in enumerate(networks)}
    for job in active:
        job.result.sender_accuracy = scores[id(job.sender)]
        job.result.receiver_accuracy = scores[id(job.receiver)]
        job.result.reference_accuracy = scores[id(job.real_receiver)]
        if store is not None:
            store.update_run(job.run_id, summary=summarize(job.result))
    # In receiver-layer order (stable: senders keep theirs), so that a chunk holds the cells
    # that share a receiver suffix and the fused pass runs each suffix once for all of them.
    cells = [cell for job in active for cell in sorted(job.cells(store), key=lambda c: c.receiver_layer.depth)]
    training = config.mode != "lstsq"
    chunks = _plan_chunks(cells, device, config.batch_size if training else batch, training, memory_fraction)
    todo = [chunk for chunk in chunks if any(c.key not in c.owner.done for c in chunk)]
    check_cancel(cancel)
    train = load_dataset(config.dataset, "train", config.train_limit).to(device) if todo else None
    body, fitted = report.span(0.03, 1.0), False
    if config.mode == "lstsq+train" and len(todo) > 1:
        # Least squares runs no backward, so it fits in far fewer chunks than training: fit
        # every cell first, and the passes over the training data that it needs run once per
        # forward-only chunk instead of once per training chunk (the result is the same: a
        # cell's solution does not depend on its chunk).
        pending = [cell for chunk in todo for cell in chunk]
        fit_chunks = _plan_chunks(pending, device, batch, False, memory_fraction)
        share = _SHARES["lstsq+train"]["lstsq"]
        for n, fit_chunk in enumerate(fit_chunks):
            _fit_chunk(config, FusedStitches(fit_chunk, device, engine), train, device,
                       body.span(share * n / len(fit_chunks), share * (n + 1) / len(fit_chunks)), cancel)
        body, fitted = body.span(share, 1.0), True
    for n, chunk in enumerate(todo):
        _run_chunk(config, chunk, train, test_dev, device, body.span(n / len(todo), (n + 1) / len(todo)),
                   cancel, engine, fitted)
        for cell in chunk:
            if cell.key not in cell.owner.done:  # a resumed chunk recomputes its stored cells alike
                _commit_cell(store, cell.owner.run_id, cell.owner.result, cell)


def _stored_score_key(net, config, device, layout) -> dict | None:
    try:
        return reference_scores.key_of(net.name, config.dataset, config.eval_limit, device.type, layout)
    except (ValueError, KeyError, OSError):  # a name without a fingerprint: kept in memory only
        return None


def _pairs(config: GridConfig, s_layers: list[Layer], r_layers: list[Layer]) -> list[tuple[Layer, Layer]]:
    if config.pairs is None:
        return [(s, r) for s in s_layers for r in r_layers]
    by_s, by_r = {s.name: s for s in s_layers}, {r.name: r for r in r_layers}
    out = []
    for pair in config.pairs:
        i, j = pair
        if i not in by_s:
            raise ValueError(f"pair ({i}, {j}): sender layer {i!r} is not among the grid's sender layers "
                             f"{list(by_s)}")
        if j not in by_r:
            raise ValueError(f"pair ({i}, {j}): receiver layer {j!r} is not among the grid's receiver layers "
                             f"{list(by_r)}")
        out.append((by_s[i], by_r[j]))
    return out


def _run_chunk(config: GridConfig, chunk: list[Cell], train: ImageSet, test: ImageSet, device, report: Reporter,
               cancel, engine: EngineOptions | None = None, fitted: bool = False):
    """Fit (unless ``fitted`` already), train and score one chunk of cells in one fused pass each."""
    fused = FusedStitches(chunk, device, engine)
    fit = config.mode in ("lstsq", "lstsq+train") and not fitted
    trains = config.mode in ("train", "lstsq+train")
    shares = dict(_SHARES[config.mode])
    if not fit:
        shares["lstsq"] = 0.0
    total = sum(shares.values())
    fit_end = shares.get("lstsq", 0.0) / total
    train_end = fit_end + shares.get("train", 0.0) / total
    if fit:
        _fit_chunk(config, fused, train, device, report.span(0.0, fit_end), cancel)
    if trains:
        fused.train(train, config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay,
                    config.seed, report.span(fit_end, train_end), cancel, lr_schedule=config.lr_schedule)
    confusions = fused.evaluate(test, _eval_batch(device), report.span(train_end, 1.0), cancel)
    for cell in chunk:
        cell.confusion = confusions.get(id(cell))


def _fit_chunk(config: GridConfig, fused: FusedStitches, train: ImageSet, device, report: Reporter, cancel) -> None:
    """Least-squares fit of the cells of ``fused``; under lstsq+train, a cell too large for least
    squares is trained from its default initialisation instead."""
    # No backward here, so large batches; each batch gives at most lstsq_rows rows per system.
    fused.fit_lstsq(train.head(config.lstsq_images), 1000 if device.type == "cuda" else 256, config.seed,
                    config.lstsq_rows, report, cancel, precondition=config.precondition)
    if config.mode == "lstsq+train":
        for cell in fused.cells:
            if cell.failed:
                cell.notes.append(f"least squares skipped: {cell.failed}")
                cell.failed = None


def _eval_batch(device: torch.device) -> int:
    # Scoring runs no backward, so big batches suit a GPU; on a CPU small ones stay in cache
    # (25 stitches x 1000 images: 11 s at batch 1000, 3.5-5 s at batch 50-64, 2 cores).
    return 1000 if device.type == "cuda" else 64


def _commit_cell(store, run_id, result: GridResult, cell: Cell) -> None:
    s = cell.stitch
    details = {"kind": s.kind, "sender_shape": list(s.sender_shape), "receiver_shape": list(s.receiver_shape),
               "bn_before": not isinstance(s.bn_before, torch.nn.Identity),
               "bn_after": not isinstance(s.bn_after, torch.nn.Identity),
               "parameters": sum(p.numel() for p in s.parameters()), "curve": cell.curve, "notes": cell.notes}
    if cell.failed or getattr(cell, "confusion", None) is None:
        details["reason"] = cell.failed or "not evaluated"
        _commit(store, run_id, result, cell.key, "failed", None, details)
        return
    confusion = cell.confusion
    details["confusion"] = confusion.tolist()
    # a class with no test image (a small eval_limit) has no accuracy: null, not 0
    details["per_class"] = [None if total == 0 else hit / total
                            for hit, total in zip(confusion.diagonal().tolist(), confusion.sum(1).tolist())]
    accuracy = confusion.diagonal().sum().item() / max(1, confusion.sum().item())
    _commit(store, run_id, result, cell.key, "done", accuracy, details, _stitch_bytes(s))


def _commit(store, run_id, result: GridResult, key, status, accuracy, details, stitch_blob=None):
    result.cells[key] = {"sender_layer": key[0], "receiver_layer": key[1], "status": status,
                         "accuracy": accuracy, "details": details}
    if store is not None:
        store.put_cell(run_id, key[0], key[1], status, accuracy, details, stitch_blob)
    elif stitch_blob is not None:  # computed elsewhere (a Ray worker): travels with the result
        result.stitches[key] = stitch_blob
