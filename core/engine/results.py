"""What a stitching grid *is*, apart from computing it: its configuration, its result, and
reading a stored one back. No torch here, so the dashboard can draw stored grids without
paying for importing it.

Metrics of a cell, all on the test split:

* ``accuracy``: the stitched network's accuracy;
* ``penalty`` = receiver accuracy - stitched accuracy (positive: stitching lost accuracy);
* ``relative`` = stitched accuracy / receiver accuracy.

The reference "receiver accuracy" is always that of the *pretrained* receiver, also under a
control. A pair no stitch can connect is ``not_stitchable`` and its metrics are ``None``
(``null`` in JSON), never 0.

Where a cell lies relative to the diagonal is the seed paper's question: a layer's *relative
depth* is its index along its axis of the grid divided by (layers - 1), so grids of different
depths compare; a cell is ``lower_left`` when the sender layer is relatively deeper than the
receiver layer (later into earlier, sender layers as rows), ``upper_right`` when shallower and
``diagonal`` when equally deep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from core.models.sources import fingerprint

__all__ = ["GridConfig", "GridResult", "load_grid", "summarize", "MODES", "CONTROLS", "LR_SCHEDULES",
           "DEFAULT_MAX_PARAMS", "fingerprint"]

DEFAULT_MAX_PARAMS = 25_000_000  # ~100 MB of fp32 weights for one stitch: beyond that it is no longer "small"

MODES = ("train", "lstsq", "lstsq+train")
CONTROLS = ("none", "random-sender", "random-receiver", "random-both")
LR_SCHEDULES = ("constant", "linear")  # core.engine.fused's schedules
# Settings added after runs were stored, with the value those runs were made with.
_LATER_FIELDS = {"precondition": False, "lr_schedule": "constant"}
MAX_EPOCHS, MAX_LR = 100, 100.0  # beyond these a grid setting is a typo (see GridConfig.validate)
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
    lstsq_rows: int = 4096  # rows per batch for the normal equations (positions subsampled): >> unknowns
    lstsq_images: int = 10000  # training images for the normal equations: plenty for <= 8192 unknowns
    max_stitch_params: int = DEFAULT_MAX_PARAMS
    # SGD along the gradient times the inverse Gram of each stitch's input (lstsq+train only:
    # the Gram is least squares'; core.engine.precondition), and the learning rate's schedule.
    precondition: bool = False
    lr_schedule: str = "constant"

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr-schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        if self.precondition and self.mode != "lstsq+train":
            raise ValueError(f"precondition needs mode lstsq+train (its preconditioner is the least-squares fit's "
                             f"Gram), got mode {self.mode!r}")
        if self.control not in CONTROLS:
            raise ValueError(f"unknown control {self.control!r}: choose one of {', '.join(CONTROLS)}")
        # NaN passes every comparison and inf overflows a step count: refused, never run "done" at chance.
        for name in ("epochs", "lr", "momentum", "weight_decay"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be at least 0 and below 1, got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight-decay must not be negative, got {self.weight_decay}")
        for name in ("sender_layers", "receiver_layers"):
            layers = getattr(self, name) or []
            twice = sorted({layer for layer in layers if layers.count(layer) > 1})
            if twice:
                raise ValueError(f"{name.replace('_', '-')} names {', '.join(twice)} more than once; "
                                 "name each layer once")
        if self.epochs <= 0 and self.mode != "lstsq":
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        for name in ("batch_size", "lstsq_rows", "lstsq_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive number of images, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        # Finite is not enough: 1e308 epochs never end, and an lr past float32's range is a torch error.
        if self.epochs > MAX_EPOCHS:
            raise ValueError(f"epochs must be at most {MAX_EPOCHS} (stitches train in 1 to 4), got {self.epochs}")
        if self.lr > MAX_LR:
            raise ValueError(f"lr must be at most {MAX_LR} (every stitch diverges long before; 0.01 is usual), "
                             f"got {self.lr}")
        for pair in self.pairs or []:
            if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(name, str) for name in pair):
                raise ValueError(f"each pair is [sender layer, receiver layer], got {pair!r}")

    @classmethod
    def from_dict(cls, d: dict) -> GridConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown grid settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def identity(self, device_type: str) -> dict:
        """The config plus what else changes the numbers: model weights and the device type.
        Fields added after runs were stored are left out at their defaults, so that those runs keep
        their identity (and are found again rather than recomputed)."""
        config = {k: v for k, v in asdict(self).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
        return {**config, "sender_weights": fingerprint(self.sender),
                "receiver_weights": fingerprint(self.receiver), "device_type": device_type}


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
    # (sender layer, receiver layer) -> the trained stitch as safetensors bytes, kept only when
    # the grid ran without a store (a Ray worker), so the store that commits it gets them too.
    stitches: dict = field(default_factory=dict, repr=False)

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


def summarize(result: GridResult) -> dict:
    """The run-level numbers a store keeps beside the cells."""
    return {"sender_layers": result.sender_layers, "receiver_layers": result.receiver_layers,
            "sender_shapes": result.sender_shapes, "receiver_shapes": result.receiver_shapes,
            "sender_accuracy": result.sender_accuracy, "receiver_accuracy": result.receiver_accuracy,
            "reference_accuracy": result.reference_accuracy}


REGIONS = ("lower_left", "upper_right", "diagonal")


def relative_depth(index: int, n: int) -> float:
    """Layer ``index`` of ``n`` along a grid axis: 0 = the first, 1 = the last (a one-layer axis: 0)."""
    return index / (n - 1) if n > 1 else 0.0


def depth_region(sender_depth: float, receiver_depth: float) -> str:
    """``lower_left`` (sender relatively deeper), ``upper_right`` (shallower) or ``diagonal``."""
    gap = sender_depth - receiver_depth
    return "diagonal" if math.isclose(gap, 0.0, abs_tol=1e-9) else "lower_left" if gap > 0 else "upper_right"


def region_means(matrix: list[list[float | None]]) -> dict[str, float | None]:
    """Mean of a grid's numbers (rows: sender layers) in each region; None for an empty region."""
    values: dict[str, list[float]] = {region: [] for region in REGIONS}
    for a, row in enumerate(matrix):
        for b, value in enumerate(row):
            if value is not None:
                region = depth_region(relative_depth(a, len(matrix)), relative_depth(b, len(row)))
                values[region].append(value)
    return {region: sum(v) / len(v) if v else None for region, v in values.items()}


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
