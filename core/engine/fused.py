"""Training, fitting and scoring many stitches in one pass over the data.

A :class:`FusedStitches` holds a set of cells (sender layer i -> receiver layer j, each with
its own stitch). Per batch it runs

1. each sender once, up to all the layers its cells need (one feature-extractor pass);
2. for each receiver layer j, the stitches into j, concatenated along the batch, through
   *one* pass of the receiver's suffix from j;
3. one backward pass for the sum of all cells' losses. Stitches share no parameters, so
   each stitch's gradient is exactly that of its own loss, and one SGD optimizer over all
   stitches equals one optimizer per stitch.

The receiver's suffix is per-example (BatchNorm in eval mode), so the rows of one stitch
never influence another's. Sender and receiver stay in eval mode with frozen weights.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from core.data.datasets import ImageSet
from core.device import autocast_for
from core.engine.conv_fusion import fuse_conv_relu
from core.engine.folding import folded
from core.engine.layers import Layer, receiver_suffix, sender_prefix
from core.engine.lstsq import LstsqTooLarge, NormalEquations
from core.engine.options import EngineOptions
from core.engine.precondition import MAX_PRECONDITIONED_INPUTS, input_preconditioner, precondition_gradient_
from core.engine.results import LR_SCHEDULES
from core.engine.stitches import Stitch
from core.progress import check_cancel

__all__ = ["Cell", "FusedStitches", "engine_network", "engine_prefix", "engine_suffix"]


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device, enabled: bool):
    """cuDNN picks the fastest convolution algorithm per shape by timing them (the grid's shapes
    never change); ``enabled=False`` leaves the choice to cuDNN's heuristics."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = (enabled and device.type == "cuda") or before
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@dataclass
class Cell:
    """One (sender layer, receiver layer) pair and its stitch, plus what training recorded."""

    sender: object  # core.models.network.Network actually used (the real one or a random control)
    receiver: object
    sender_layer: Layer
    receiver_layer: Layer
    stitch: Stitch
    curve: list = field(default_factory=list)  # [(step, mean loss since the last point)]
    failed: str | None = None
    notes: list = field(default_factory=list)
    owner: object = None  # whose cell this is (the grid it belongs to, when several share a pass)
    # The inverse Gram of the stitch's input that its gradient is multiplied by during training
    # (core.engine.precondition); set by fit_lstsq(precondition=True), shared by cells whose stitch
    # inputs are the same rows.
    preconditioner: object = None

    @property
    def key(self) -> tuple[str, str]:
        return self.sender_layer.name, self.receiver_layer.name


def _lr_schedule(optimizer, schedule: str, total_steps: int):
    """torch's scheduler for ``schedule``, stepped once per training step: None for ``constant``,
    ``linear`` from the learning rate down to 0 at ``total_steps``."""
    if schedule == "constant":
        return None
    if schedule == "linear":
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                                 total_iters=total_steps)
    raise ValueError(f"unknown lr_schedule {schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")


def engine_network(net, layers=(), fold_bn: bool = True, channels_last: bool = True):
    """The copy of ``net`` the engine runs (same layer names): BatchNorm folded
    (:mod:`core.engine.folding`), with its weights in channels_last order.

    NHWC weights pay on both devices: a 1-channel input carries no layout, so with NCHW weights
    the frozen networks ran NCHW throughout (on an H100 every stitch then copied its input; on
    two CPU cores the zoo ResNet-18's prefix to its 9 layers took 205 ms per 256 images against
    124 ms with NHWC weights, ``python -m bench.cpu_engine``)."""
    return folded(net, layers, channels_last) if fold_bn else net


def engine_prefix(net, layers: list[Layer], fuse_relu: bool = True, **engine):
    """``net`` up to ``layers`` as the engine runs it (:func:`engine_network`; each conv + bias
    (+ residual) + ReLU one cuDNN or oneDNN call, :mod:`core.engine.conv_fusion`). The same
    activations up to float rounding."""
    prefix = sender_prefix(engine_network(net, layers, **engine), layers)
    if fuse_relu:
        fuse_conv_relu(prefix.extractor)
    return prefix


def engine_suffix(net, layer: Layer, fuse_relu: bool = True, **engine):
    """``net`` from ``layer`` to its output, as :func:`engine_prefix` runs it."""
    suffix = receiver_suffix(engine_network(net, [layer], **engine), layer)
    if fuse_relu:
        fuse_conv_relu(suffix)
    return suffix


def _prefixes(cells: list[Cell], role: str, **engine) -> dict[int, tuple[object, object, dict]]:
    """For each distinct sender (or receiver) network: (network, prefix up to every layer its
    cells need, {layer node: position in the prefix's output})."""
    out = {}
    for cell in cells:
        net = getattr(cell, role)
        if id(net) not in out:
            layers = list({getattr(c, f"{role}_layer").node: getattr(c, f"{role}_layer")
                           for c in cells if getattr(c, role) is net}.values())
            out[id(net)] = (net, engine_prefix(net, layers, **engine), {lay.node: k for k, lay in enumerate(layers)})
    return out


def _subsample(t: torch.Tensor, rows: dict, seed: int, batch: int, limit: int) -> torch.Tensor:
    """At most ``limit`` rows of ``t`` (a fixed random subset of positions keeps least squares
    fast), drawn from (seed, batch, row count) alone, so the same in any chunk; ``rows`` holds
    this batch's subsets, so design and target rows of one cell get the same one."""
    n = t.shape[0]
    if n <= limit:
        return t
    if n not in rows:
        generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{batch}:{n}".encode()))
        rows[n] = torch.randperm(n, generator=generator)[:limit].to(t.device)
    return t[rows[n]]


class FusedStitches:
    """Train, least-squares fit and evaluate ``cells`` together on ``device``.

    Speed options (:class:`core.engine.options.EngineOptions`, or its fields as keyword
    arguments; defaults: what measured fastest, see BENCHMARKS.md): ``amp`` bf16 autocast
    (default on CUDA), ``channels_last`` NHWC layout (default everywhere: 1.2x the speed of
    NCHW for the zoo's grids on 2 CPU cores as well), ``fold_bn`` BatchNorm of
    the frozen networks folded into the preceding convolution (:mod:`core.engine.folding`; exact up to
    float rounding), ``fuse_relu`` each conv + bias (+ residual) + ReLU of the frozen networks
    as one cuDNN (CUDA) or oneDNN (CPU) call (:mod:`core.engine.conv_fusion`), ``compile`` the receiver
    suffixes with ``torch.compile``, ``autotune`` cuDNN's timed search for the fastest algorithm
    of every convolution shape (CUDA; off: on an H100 it cost 12-18 s per grid and its picks ran
    no faster than cuDNN's heuristics'), ``patch_product`` k x k stride-k stitches as one matrix product
    rather than cuDNN's convolution (CUDA; :meth:`core.engine.stitches.Stitch._patch_product`).
    """

    def __init__(self, cells: list[Cell], device: torch.device, options: EngineOptions | None = None, **fields):
        options = replace(EngineOptions.coerce(options), **fields)  # fields: EngineOptions' names
        self.cells = cells
        self.device = device
        self.autotune = options.autotune
        self.amp = options.amp
        self.channels_last = True if options.channels_last is None else options.channels_last
        self.fold_bn = options.fold_bn
        for cell in cells:
            cell.stitch.to(device)
            cell.stitch.patch_product = options.patch_product
            if self.channels_last:
                cell.stitch.to(memory_format=torch.channels_last)
        self._engine = {"fold_bn": options.fold_bn, "channels_last": self.channels_last,
                        "fuse_relu": options.fuse_relu}
        compile = options.compile
        self._senders = _prefixes(cells, "sender", **self._engine)
        self._suffixes: dict[tuple[int, str], object] = {}
        for cell in cells:
            key = (id(cell.receiver), cell.receiver_layer.node)
            if key not in self._suffixes:
                suffix = engine_suffix(cell.receiver, cell.receiver_layer, **self._engine)
                self._suffixes[key] = torch.compile(suffix, dynamic=False) if compile else suffix

    # --- shared passes -------------------------------------------------------------------------
    def _activations(self, prefixes, images: torch.Tensor) -> dict[int, list[torch.Tensor]]:
        """Run each network's prefix once (no grad: the networks are frozen)."""
        acts = {}
        with torch.no_grad(), autocast_for(self.device, self.amp):
            for key, (net, prefix, _) in prefixes.items():
                x = net.prepare(images)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                acts[key] = prefix(x)
        return acts

    def _sender_activations(self, images: torch.Tensor) -> dict[int, list[torch.Tensor]]:
        return self._activations(self._senders, images)

    def _activation(self, acts, cell: Cell) -> torch.Tensor:
        _, _, index = self._senders[id(cell.sender)]
        return acts[id(cell.sender)][index[cell.sender_layer.node]]

    def _groups(self, cells: list[Cell]) -> dict[tuple[int, str], list[Cell]]:
        groups: dict[tuple[int, str], list[Cell]] = defaultdict(list)
        for cell in cells:
            groups[(id(cell.receiver), cell.receiver_layer.node)].append(cell)
        return groups

    def _stitched_logits(self, acts, group_key, group: list[Cell]) -> torch.Tensor:
        """Logits of every cell in ``group`` (same receiver layer): (len(group), B, classes)."""
        z = torch.cat([cell.stitch(self._activation(acts, cell)) for cell in group])  # (n*B, *receiver_shape)
        logits = self._suffixes[group_key](z)
        return logits.view(len(group), -1, logits.shape[-1])

    # --- task-loss training ------------------------------------------------------------------
    def train(self, data: ImageSet, epochs: float, batch_size: int, lr: float, momentum: float,
              weight_decay: float, seed: int, report=None, cancel=None, log_every: int = 20,
              lr_schedule: str = "constant") -> None:
        """SGD on the stitches' cross-entropy; failed (diverged) cells are dropped as they fail.
        A cell with a ``preconditioner`` steps along its preconditioned gradient; ``lr_schedule``
        ``linear`` decays the learning rate to 0 at the last step.

        ``report(stage, fraction, message)`` hears of every ``log_every``-th step (a
        :class:`core.progress.Reporter`); ``cancel`` is asked before every step, so a cancel
        costs at most the step in flight."""
        active = self._in_group_order([c for c in self.cells if c.failed is None])
        if not active:
            return
        params = [p for c in active for p in c.stitch.parameters()]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        steps_per_epoch = -(-len(data) // batch_size)
        total_steps = max(1, round(epochs * steps_per_epoch))
        schedule = _lr_schedule(optimizer, lr_schedule, total_steps)
        generator = torch.Generator().manual_seed(seed)  # same order for every chunk and every device
        for c in active:
            c.stitch.train()
        autotune = _cudnn_autotune(self.device, self.autotune)
        autotune.__enter__()
        running = torch.zeros(len(active), device=self.device)
        since, step = 0, 0
        try:
            while step < total_steps:
                for images, labels in data.batches(batch_size, self.device, shuffle=True, generator=generator):
                    if step >= total_steps:
                        break
                    check_cancel(cancel)
                    losses = self._train_step(images, labels, active, optimizer)
                    if schedule is not None:
                        schedule.step()
                    running += losses.detach()
                    since += 1
                    step += 1
                    if step % log_every == 0 or step == total_steps:
                        active, running = self._log(active, running, since, step)
                        since = 0
                        if report:  # the loss so far, for the page's progress panel
                            losses = [c.curve[-1][1] for c in active if c.curve]
                            loss = f", mean loss {sum(losses) / len(losses):.3f}" if losses else ""
                            report("train", step / total_steps, f"training: step {step}/{total_steps}{loss}")
                        if not active:
                            return
        finally:
            autotune.__exit__(None, None, None)
            for c in self.cells:
                c.stitch.eval()

    def _train_step(self, images, labels, active: list[Cell], optimizer) -> torch.Tensor:
        """One SGD step for every cell in ``active``; returns their losses in ``active`` order.

        ``active`` must be in group order (see :meth:`_in_group_order`)."""
        acts = self._sender_activations(images)
        per_cell = []
        with autocast_for(self.device, self.amp):
            for key, group in self._groups(active).items():
                logits = self._stitched_logits(acts, key, group)  # (n, B, classes)
                target = labels.repeat(len(group))
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target, reduction="none")
                per_cell.append(loss.view(len(group), -1).mean(1))
        losses = torch.cat(per_cell)
        # A diverged cell contributes nothing (and is dropped at the next log point); the
        # others' gradients are untouched because no parameter is shared.
        total = torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses)).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        for cell in active:
            if cell.preconditioner is not None:
                precondition_gradient_(cell.stitch, cell.preconditioner)
        optimizer.step()
        return losses

    def _in_group_order(self, cells: list[Cell]) -> list[Cell]:
        return [c for group in self._groups(cells).values() for c in group]

    def _log(self, active, running, since, step):
        means = (running / since).tolist()
        keep = []
        for cell, value in zip(active, means):
            if value != value or value in (float("inf"), float("-inf")):
                cell.failed = f"training diverged (loss became {value}) by step {step}; try a smaller learning rate"
                continue
            cell.curve.append((step, value))
            keep.append(cell)
        if len(keep) != len(active):
            for cell in active:
                if cell.failed:
                    for p in cell.stitch.parameters():
                        p.grad = None
            return keep, torch.zeros(len(keep), device=self.device)
        return active, torch.zeros_like(running)

    # --- least squares -------------------------------------------------------------------------
    def fit_lstsq(self, data: ImageSet, batch_size: int, seed: int, rows_per_batch: int = 8192,
                  report=None, cancel=None, precondition: bool = False) -> None:
        """Fit every stitch's linear part to the receiver's own activation at its layer (``cancel``
        is asked before every batch); with ``precondition``, also give each cell the
        preconditioner of its input (:mod:`core.engine.precondition`) for :meth:`train`."""
        targets = _prefixes(self.cells, "receiver", **self._engine)
        systems: dict[int, NormalEquations] = {}
        grams: dict[tuple, dict] = {}
        design_keys: dict[int, tuple] = {}
        for k, cell in enumerate(self.cells):
            if cell.stitch.has_batchnorm:
                raise ValueError("least-squares stitches solve the linear map exactly and cannot be combined with "
                                 "BatchNorm in the stitch; turn bn_before/bn_after off or use mode 'train'")
            d_in = cell.stitch.linear.weight[0].numel()
            d_out = cell.stitch.linear.weight.shape[0]
            # Stitches share XᵀX when their design rows are the same: same sender activation,
            # resampled to the same target (spatial size for maps, token count for tokens).
            target = cell.stitch.receiver_shape[:1] if cell.stitch.kind == "tokens" else cell.stitch.receiver_shape[1:]
            gram_key = (id(cell.sender), cell.sender_layer.node, cell.stitch.kind,
                        cell.stitch.linear.weight.shape[1:], tuple(target))
            try:
                systems[k] = NormalEquations(d_in, d_out, self.device, grams.get(gram_key))
            except LstsqTooLarge as exc:
                cell.failed = str(exc)
                continue
            grams.setdefault(gram_key, systems[k].gram)
            design_keys[k] = gram_key
        owners = {id(s.gram): k for k, s in reversed(list(systems.items()))}  # one cell adds each Gram's rows
        n_batches = -(-len(data) // batch_size)
        with torch.no_grad():
            for b, (images, _) in enumerate(data.batches(batch_size, self.device)):
                check_cancel(cancel)
                acts = self._sender_activations(images)
                wanted = self._activations(targets, images)
                with autocast_for(self.device, self.amp):
                    rows: dict[int, torch.Tensor] = {}
                    # Cells that share a Gram share their design rows, and cells from different
                    # senders into one receiver layer often share their target rows: each is made
                    # (resampled, subsampled, cast to float64) once per batch.
                    xs: dict[tuple, tuple[torch.Tensor, int]] = {}
                    ys: dict[tuple, torch.Tensor] = {}
                    for k, system in systems.items():
                        cell = self.cells[k]
                        if design_keys[k] not in xs:
                            x = cell.stitch.design_rows(self._activation(acts, cell))
                            xs[design_keys[k]] = (_subsample(x, rows, seed, b, rows_per_batch).double(), x.shape[0])
                        x, n_rows = xs[design_keys[k]]
                        growth = cell.stitch.growth if isinstance(cell.stitch.growth, int) else None
                        target_key = (id(cell.receiver), cell.receiver_layer.node, cell.stitch.kind, growth, n_rows)
                        if target_key not in ys:
                            _, _, index = targets[id(cell.receiver)]
                            y = cell.stitch.target_rows(wanted[id(cell.receiver)][index[cell.receiver_layer.node]])
                            ys[target_key] = _subsample(y, rows, seed, b, rows_per_batch).double()
                        if owners[id(system.gram)] == k:
                            system.add_gram(x)
                        system.add_cross(x, ys[target_key])
                if report:
                    report("lstsq", (b + 1) / n_batches, f"least squares: batch {b + 1}/{n_batches}")
        preconditioners: dict[int, torch.Tensor] = {}  # one per Gram: cells sharing rows share it
        for k, system in systems.items():
            weight, bias = system.solve()
            cell = self.cells[k]
            cell.stitch.set_linear(weight, bias)
            if not precondition:
                continue
            if weight.shape[1] > MAX_PRECONDITIONED_INPUTS:
                cell.notes.append(f"trained with its plain gradient: {weight.shape[1]} inputs, over the "
                                  f"{MAX_PRECONDITIONED_INPUTS} a preconditioner is kept for")
                continue
            key = id(system.gram)
            if key not in preconditioners:
                preconditioners[key] = input_preconditioner(system.augmented_gram())
            cell.preconditioner = preconditioners[key]

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self, data: ImageSet, batch_size: int, report=None, cancel=None) -> dict[int, torch.Tensor]:
        """Confusion matrices ``(classes, classes)`` (rows: true label) for every cell that has not failed
        (``cancel`` is asked before every batch)."""
        active = self._in_group_order([c for c in self.cells if c.failed is None])
        k = data.info.num_classes
        # One (cells, true label, predicted label) count table for all cells, filled with one
        # index_add_ per receiver layer: torch.bincount would read its input's maximum back to
        # the host, a GPU synchronisation per cell and batch.
        confusion = torch.zeros(len(active) * k * k, dtype=torch.long, device=self.device)
        groups = self._groups(active)
        offsets, first = {}, 0
        for key, group in groups.items():  # active is in group order: a group's cells are consecutive
            offsets[key] = ((first + torch.arange(len(group), device=self.device)) * (k * k))[:, None]  # (n, 1)
            first += len(group)
        n_batches = -(-len(data) // batch_size)
        with torch.no_grad(), _cudnn_autotune(self.device, self.autotune):
            for b, (images, labels) in enumerate(data.batches(batch_size, self.device)):
                check_cancel(cancel)
                acts = self._sender_activations(images)
                with autocast_for(self.device, self.amp):
                    for key, group in groups.items():
                        predictions = self._stitched_logits(acts, key, group).argmax(-1)  # (n, B)
                        index = (offsets[key] + labels[None, :] * k + predictions).reshape(-1)
                        confusion.index_add_(0, index, torch.ones_like(index))
                if report:
                    report("evaluate", (b + 1) / n_batches, f"scoring the stitches: batch {b + 1}/{n_batches}")
        tables = confusion.view(len(active), k, k).cpu()
        return {id(c): tables[n] for n, c in enumerate(active)}
