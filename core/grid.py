"""Stitching grids: every (sender layer i, receiver layer j) pair, trained and scored together.

:func:`run_grid` is the one entry point. It loads the two networks (or their random
controls), lists the layers, builds one stitch per pair, splits the pairs into chunks that fit
in memory, and for each chunk trains and/or least-squares fits the stitches in one fused pass
(:mod:`core.fused`), scores them on the test split and commits every cell to the store.

Metrics of a cell, all on the test split:

* ``accuracy``: the stitched network's accuracy;
* ``penalty`` = receiver accuracy - stitched accuracy (positive: stitching lost accuracy);
* ``relative`` = stitched accuracy / receiver accuracy.

The reference "receiver accuracy" is always that of the *pretrained* receiver, also under a
control. A pair no stitch can connect is ``not_stitchable`` and its metrics are ``None``
(``null`` in JSON), never 0.
"""

from __future__ import annotations

import functools
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import paths, zoo
from .data import ImageSet, load_dataset
from .device import autocast_for, resolve_device
from .fused import Cancelled, Cell, FusedStitches
from .layers import Layer, layer_graph, list_layers, resolve_layer
from .models import Network, load_model, parse_name
from .stitch import DEFAULT_MAX_PARAMS, NotStitchable, Stitch, make_stitch

__all__ = ["GridConfig", "GridResult", "run_grid", "load_grid", "MODES", "CONTROLS", "PRESETS", "Cancelled",
           "evaluate_network", "cached_model"]

MODES = ("train", "lstsq", "lstsq+train")
CONTROLS = ("none", "random-sender", "random-receiver", "random-both")
# What the dashboard offers; the CLI exposes every field.
PRESETS = {
    "instant": {"mode": "lstsq"},
    "standard": {"mode": "train", "epochs": 1.0},
    # The seed paper: 3-4 epochs, SGD momentum 0.9, lr 0.01, batch 256, weight decay 0.01.
    "paper": {"mode": "train", "epochs": 3.0, "lr": 0.01, "momentum": 0.9, "batch_size": 256, "weight_decay": 0.01},
}


@dataclass
class GridConfig:
    """Everything that determines a grid's result (and so its identity in the store)."""

    sender: str
    receiver: str
    sender_layers: list[str] | None = None  # None: the default layers (stem + blocks)
    receiver_layers: list[str] | None = None
    pairs: list[list[str]] | None = None  # a subset of (sender layer, receiver layer); None: all
    mode: str = "train"
    control: str = "none"
    dataset: str = "fashion-mnist"
    epochs: float = 1.0
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.01
    train_limit: int | None = None  # first N training images (None: all)
    eval_limit: int | None = None  # first N test images (None: all)
    seed: int = 0
    bn_before: bool = False
    bn_after: bool = False
    lstsq_rows: int = 8192  # rows per batch used for the normal equations (positions subsampled)
    max_stitch_params: int = DEFAULT_MAX_PARAMS

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.control not in CONTROLS:
            raise ValueError(f"unknown control {self.control!r}: choose one of {', '.join(CONTROLS)}")
        if self.epochs <= 0 and self.mode != "lstsq":
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        for name in ("batch_size", "lstsq_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive number of images, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict) -> GridConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown grid settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def identity(self, device: torch.device) -> dict:
        """The config plus what else changes the numbers: model weights and device type."""
        return {**asdict(self), "sender_weights": _fingerprint(self.sender),
                "receiver_weights": _fingerprint(self.receiver), "device_type": device.type}


def _fingerprint(name: str) -> str:
    base, _ = parse_name(name)
    if base.startswith("zoo/"):
        return zoo.zoo_entry(base[4:])["sha256"]
    if base.startswith("paper/"):
        return zoo.zoo_entry(base[6:], paths.home() / "zoo-paper")["sha256"]
    if base.startswith("file:"):
        return zoo.sha256_of(Path(base[5:]).expanduser())
    return base


@dataclass
class GridResult:
    """A finished (or partial) grid. ``cells[(i, j)]`` holds status, accuracy and details."""

    config: dict
    sender_layers: list[str]
    receiver_layers: list[str]
    sender_shapes: list[list[int]]
    receiver_shapes: list[list[int]]
    cells: dict = field(default_factory=dict)
    sender_accuracy: float | None = None
    receiver_accuracy: float | None = None
    reference_accuracy: float | None = None
    seconds: float = 0.0
    status: str = "done"
    run_id: str | None = None
    reused: bool = False

    def value(self, i: str, j: str, metric: str = "accuracy") -> float | None:
        cell = self.cells.get((i, j))
        if not cell or cell["status"] != "done" or cell["accuracy"] is None:
            return None
        acc = cell["accuracy"]
        if metric == "accuracy":
            return acc
        ref = self.reference_accuracy
        if metric == "penalty":
            return None if ref is None else ref - acc
        if metric == "relative":
            return None if not ref else acc / ref
        raise ValueError(f"unknown metric {metric!r}: accuracy, penalty or relative")

    def matrix(self, metric: str = "accuracy") -> list[list[float | None]]:
        """Rows: sender layers; columns: receiver layers; None where there is no number."""
        return [[self.value(i, j, metric) for j in self.receiver_layers] for i in self.sender_layers]

    def status_matrix(self) -> list[list[str]]:
        return [[self.cells.get((i, j), {}).get("status", "missing") for j in self.receiver_layers]
                for i in self.sender_layers]

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "sender": self.config["sender"],
            "receiver": self.config["receiver"],
            "sender_layers": self.sender_layers,
            "receiver_layers": self.receiver_layers,
            "sender_shapes": self.sender_shapes,
            "receiver_shapes": self.receiver_shapes,
            "accuracy": self.matrix("accuracy"),
            "penalty": self.matrix("penalty"),
            "relative": self.matrix("relative"),
            "status": self.status_matrix(),
            "reasons": {f"{i} -> {j}": c["details"].get("reason") for (i, j), c in self.cells.items()
                        if c["status"] != "done"},
            "sender_accuracy": self.sender_accuracy,
            "receiver_accuracy": self.receiver_accuracy,
            "reference_accuracy": self.reference_accuracy,
            "mode": self.config["mode"],
            "control": self.config["control"],
            "dataset": self.config["dataset"],
            "seconds": round(self.seconds, 3),
            "reused": self.reused,
            "config": self.config,
        }


@functools.lru_cache(maxsize=16)
def cached_model(name: str, device: str) -> Network:
    """Networks are frozen, so one loaded copy per (name, device) serves every grid."""
    return load_model(name, device)


def evaluate_network(net: Network, data: ImageSet, device: torch.device, batch_size: int = 1000,
                     amp: bool | None = None) -> float:
    """Top-1 accuracy of ``net`` on ``data``."""
    correct = 0
    with torch.no_grad(), autocast_for(device, amp):
        for images, labels in data.batches(batch_size, device):
            correct += (net(images).argmax(-1) == labels).sum().item()
    return correct / max(1, len(data))


def _networks(config: GridConfig, device: torch.device):
    """(sender used, receiver used, pretrained receiver) for the control."""
    dev = str(device)
    sender, receiver = cached_model(config.sender, dev), cached_model(config.receiver, dev)
    used_sender = cached_model(f"{parse_name(config.sender)[0]}@random:{config.seed}", dev) \
        if config.control in ("random-sender", "random-both") else sender
    # seed + 1: when sender and receiver are the same architecture, the two random copies differ.
    used_receiver = cached_model(f"{parse_name(config.receiver)[0]}@random:{config.seed + 1}", dev) \
        if config.control in ("random-receiver", "random-both") else receiver
    return used_sender, used_receiver, receiver


def _layers(net: Network, names: list[str] | None) -> list[Layer]:
    if not names:
        return list_layers(net)
    return [resolve_layer(net, n) for n in names]


def _cell_seed(seed: int, i: str, j: str) -> int:
    return zlib.crc32(f"{seed}:{i}:{j}".encode())


def _plan_chunks(cells: list[Cell], device: torch.device, batch_size: int, backward: bool) -> list[list[Cell]]:
    """Group cells (in receiver-layer order) so each chunk's activations fit in memory.

    Fewer chunks means fewer sender passes; with ``backward`` the activations of the
    receiver's suffix are kept for the backward pass, hence the larger estimate."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, bytes_per = 0.45 * free, 2
    else:
        budget, bytes_per = 1.5e9, 4
    chunks, current, used = [], [], 0.0
    for cell in cells:
        graph = layer_graph(cell.receiver.module, cell.receiver.input_shape)
        cut = cell.receiver_layer.depth
        after = sum(int(torch.tensor(n.meta["tensor_meta"].shape[1:]).prod())
                    for n in graph.nodes[cut:] if hasattr(n.meta.get("tensor_meta"), "shape"))
        # activations kept for backward and their gradients; without backward, about two live at a time
        cost = (3 * after if backward else 2 * max(cell.receiver_layer.shape)) * batch_size * bytes_per
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
             cancel=None, name: str | None = None, reuse: bool = True) -> GridResult:
    """Train and score a stitching grid; see the module docstring.

    Args:
        config: a :class:`GridConfig` (or a dict of its fields).
        store: a :class:`core.store.Store` to commit cells to, resume from and reuse results from.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        progress: called with a dict ``{"stage", "fraction", "message", "eta"}`` as work advances.
        cancel: a callable returning True to stop; finished cells stay in the store, and
            :class:`Cancelled` is raised.
        reuse: with a store, return a finished run of the same configuration without recomputing,
            and resume an unfinished one.

    Example::

        >>> result = run_grid({"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1",
        ...                    "mode": "lstsq", "eval_limit": 1000})
        >>> result.matrix("accuracy")[0][0]
        0.81
    """
    config = config if isinstance(config, GridConfig) else GridConfig.from_dict(config)
    config.validate()
    device = resolve_device(device)
    start = time.perf_counter()
    report = _Reporter(progress, start)

    report("load", 0.0, f"loading {config.sender} and {config.receiver}")
    used_sender, used_receiver, receiver = _networks(config, device)
    s_layers, r_layers = _layers(used_sender, config.sender_layers), _layers(used_receiver, config.receiver_layers)
    wanted = _pairs(config, s_layers, r_layers)
    test = load_dataset(config.dataset, "test", config.eval_limit)
    if receiver.num_classes != test.info.num_classes:
        raise ValueError(f"receiver {config.receiver} predicts {receiver.num_classes} classes but {config.dataset} has "
                         f"{test.info.num_classes}; stitching is scored on the receiver's task, so pick a receiver "
                         f"trained on {config.dataset}")
    if len(test.class_counts()) < 2 or sum(1 for c in test.class_counts() if c) < 2:
        raise ValueError(f"the {config.dataset} test split has fewer than two classes with images; accuracy would be "
                         f"meaningless")

    result = GridResult(asdict(config), [lay.name for lay in s_layers], [lay.name for lay in r_layers],
                        [list(lay.shape) for lay in s_layers], [list(lay.shape) for lay in r_layers])
    identity = config.identity(device)
    run_id, done = None, {}
    if store is not None:
        previous = store.find_run("grid", identity) if reuse else None
        if previous is not None:
            run_id = previous["id"]
            done = {(c["sender_layer"], c["receiver_layer"]): c for c in store.cells(run_id)}
            if previous["status"] == "done" and set(done) >= {(s.name, r.name) for s, r in wanted}:
                return load_grid(store, run_id, reused=True)
            store.update_run(run_id, status="running", message="resumed")
        else:
            run_id = store.create_run("grid", identity, name)
    result.run_id = run_id
    result.cells.update(done)

    try:
        test_dev = test.to(device)
        report("reference", 0.01, "scoring sender and receiver on their own")
        batch = _eval_batch(device)
        result.sender_accuracy = evaluate_network(used_sender, test_dev, device, batch)
        result.receiver_accuracy = evaluate_network(used_receiver, test_dev, device, batch)
        result.reference_accuracy = (result.receiver_accuracy if used_receiver is receiver
                                     else evaluate_network(receiver, test_dev, device, batch))
        if store is not None:
            store.update_run(run_id, summary=_summary(result))

        cells = []
        for s_layer, r_layer in wanted:
            key = (s_layer.name, r_layer.name)
            try:
                stitch = make_stitch(s_layer.shape, r_layer.shape, config.bn_before, config.bn_after,
                                     config.max_stitch_params, _cell_seed(config.seed, *key))
            except NotStitchable as exc:
                _commit(store, run_id, result, key, "not_stitchable", None, {"reason": str(exc)})
                continue
            cells.append(Cell(used_sender, used_receiver, s_layer, r_layer, stitch))
        training = config.mode != "lstsq"
        if not cells and wanted and not done:
            first = next(iter(result.cells.values()))["details"]["reason"]
            raise ValueError(f"no pair of this grid is stitchable ({first}); pick other layers, or allow larger "
                             f"stitches with max_stitch_params")
        chunks = _plan_chunks(cells, device, config.batch_size if training else _eval_batch(device), training)
        todo = [chunk for chunk in chunks if any(c.key not in done for c in chunk)]
        train = load_dataset(config.dataset, "train", config.train_limit).to(device) if todo else None
        for n, chunk in enumerate(todo):
            _run_chunk(config, chunk, train, test_dev, device, report.scoped(n, len(todo)), cancel)
            for cell in chunk:
                if cell.key not in done:
                    _commit_cell(store, run_id, result, cell)
        result.seconds = time.perf_counter() - start
        result.status = "done"
        if store is not None:
            store.update_run(run_id, status="done", message=None, seconds=result.seconds, summary=_summary(result))
        report("done", 1.0, "finished")
        return result
    except Cancelled:
        if store is not None:
            store.update_run(run_id, status="cancelled", message="cancelled by the user")
        raise
    except BaseException as exc:
        if store is not None:
            store.update_run(run_id, status="failed", message=f"{type(exc).__name__}: {exc}")
        raise


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


def _run_chunk(config: GridConfig, chunk: list[Cell], train: ImageSet, test: ImageSet, device, report, cancel):
    fused = FusedStitches(chunk, device)
    phases = {"lstsq": (0.0, 1.0), "train": (0.0, 1.0)}
    if config.mode == "lstsq+train":
        phases = {"lstsq": (0.0, 0.15), "train": (0.15, 1.0)}
    evaluate_share = 0.1

    def phase(name):
        lo, hi = phases[name]
        return lambda done, total, _elapsed: report(
            name, (lo + (hi - lo) * done / total) * (1 - evaluate_share), f"{name}: step {done}/{total}")

    if config.mode in ("lstsq", "lstsq+train"):
        fused.fit_lstsq(train, config.batch_size, config.seed, config.lstsq_rows, phase("lstsq"), cancel)
        if config.mode == "lstsq+train":
            for cell in chunk:
                if cell.failed:  # too large for least squares: train from the default initialisation
                    cell.notes.append(f"least squares skipped: {cell.failed}")
                    cell.failed = None
    if config.mode in ("train", "lstsq+train"):
        fused.train(train, config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay,
                    config.seed, phase("train"), cancel)
    confusions = fused.evaluate(test, _eval_batch(device), lambda d, t, _e: report(
        "evaluate", (1 - evaluate_share) + evaluate_share * d / t, f"scoring: batch {d}/{t}"), cancel)
    for cell in chunk:
        cell.confusion = confusions.get(id(cell))


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
    per_class_total = confusion.sum(1).clamp_min(1)
    details["confusion"] = confusion.tolist()
    details["per_class"] = (confusion.diagonal() / per_class_total).tolist()
    accuracy = confusion.diagonal().sum().item() / max(1, confusion.sum().item())
    _commit(store, run_id, result, cell.key, "done", accuracy, details, _stitch_bytes(s))


def _commit(store, run_id, result: GridResult, key, status, accuracy, details, stitch_blob=None):
    result.cells[key] = {"sender_layer": key[0], "receiver_layer": key[1], "status": status,
                         "accuracy": accuracy, "details": details}
    if store is not None:
        store.put_cell(run_id, key[0], key[1], status, accuracy, details, stitch_blob)


def _summary(result: GridResult) -> dict:
    return {"sender_layers": result.sender_layers, "receiver_layers": result.receiver_layers,
            "sender_shapes": result.sender_shapes, "receiver_shapes": result.receiver_shapes,
            "sender_accuracy": result.sender_accuracy, "receiver_accuracy": result.receiver_accuracy,
            "reference_accuracy": result.reference_accuracy}


def load_grid(store, run_id: str, reused: bool = False) -> GridResult:
    """A stored grid, without recomputing anything."""
    run = store.get_run(run_id)
    summary = run["summary"]
    config = {k: v for k, v in run["config"].items() if k in {f.name for f in fields(GridConfig)}}
    result = GridResult(config, summary.get("sender_layers", []), summary.get("receiver_layers", []),
                        summary.get("sender_shapes", []), summary.get("receiver_shapes", []),
                        sender_accuracy=summary.get("sender_accuracy"),
                        receiver_accuracy=summary.get("receiver_accuracy"),
                        reference_accuracy=summary.get("reference_accuracy"),
                        seconds=run.get("seconds") or 0.0, status=run["status"], run_id=run_id, reused=reused)
    for c in store.cells(run_id):
        result.cells[(c["sender_layer"], c["receiver_layer"])] = c
    return result


class _Reporter:
    """Turns phase progress into overall fraction + ETA for the ``progress`` callback."""

    def __init__(self, callback, start: float, lo: float = 0.0, hi: float = 1.0):
        self.callback, self.start, self.lo, self.hi = callback, start, lo, hi

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if self.callback is None:
            return
        overall = self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / overall - elapsed if overall > 0.02 else None
        self.callback({"stage": stage, "fraction": overall, "message": message, "eta": eta, "elapsed": elapsed})

    def scoped(self, n: int, total: int) -> _Reporter:
        span = (self.hi - 0.03) / total
        return _Reporter(self.callback, self.start, 0.03 + n * span, 0.03 + (n + 1) * span)

