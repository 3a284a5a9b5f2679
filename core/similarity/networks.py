"""Similarity of networks: every layer of one against every layer of another, on a dataset.

The estimators themselves are in :mod:`core.similarity.cka` and :mod:`core.similarity.measures`;
this module feeds them activations: each network runs once per batch up to all its layers
(:func:`core.engine.layers.sender_prefix`). :func:`model_cka` folds each batch into a
:class:`core.similarity.cka.MinibatchCKA` and drops it, so memory is one batch whatever the
dataset size; :func:`model_similarity` keeps every batch (float32, on the CPU), because most
indices need all the examples at once, and refuses an image count whose features would not fit
:data:`core.similarity.catalogue.FEATURE_BUDGET`.

The networks run as the stitching engine runs them (:func:`core.engine.fused.engine_prefix`: BatchNorm
folded into the convolutions, NHWC weights, conv + bias (+ residual) + ReLU fused), and the images are
moved to the device once: copying each batch from host memory made the host wait for the GPU
every batch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from core.data.datasets import load_dataset
from core.device import resolve_device
from core.engine.fused import engine_prefix
from core.engine.layers import Layer, list_layers, resolve_layer, sender_prefix
from core.progress import Reporter, check_cancel
from core.similarity.catalogue import FEATURE_BUDGET, check_feature_budget, check_measure_names
from core.similarity.cka import MIN_BATCH, MinibatchCKA, check_kernel, check_minibatch, minibatch_spans

__all__ = ["CkaResult", "SimilarityResult", "model_cka", "model_similarity", "stitch_cka"]


@dataclass
class CkaResult:
    """A layer x layer CKA matrix of two networks; ``cka[i][j]``: layer ``layers_a[i]`` vs ``layers_b[j]``."""

    model_a: str
    model_b: str
    layers_a: list[str]
    layers_b: list[str]
    cka: list[list[float]]
    kernel: str
    batch_size: int
    n_examples: int
    seconds: float

    def to_json(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b, "layers_a": self.layers_a,
                "layers_b": self.layers_b, "cka": self.cka, "kernel": self.kernel, "batch_size": self.batch_size,
                "n_examples": self.n_examples, "seconds": round(self.seconds, 3)}


def _compute_device(device, *models) -> torch.device:
    """``"auto"`` with only Network objects: where the first one lives; otherwise as asked."""
    if device in (None, "auto") and all(not isinstance(m, str) for m in models):
        return _device_of(models[0].module)
    return resolve_device(device)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _network(model, device: torch.device):
    """A registry name is loaded (and cached) on ``device``; a Network is used where it is."""
    if isinstance(model, str):
        from core.models.network import cached_model

        return cached_model(model, str(device))
    if not (hasattr(model, "module") and hasattr(model, "prepare")):
        raise TypeError(f"expected a model name such as 'zoo/resnet_1111-s0' or a core.models.network.Network, got "
                        f"{type(model).__name__}")
    return model


def _layers(net, names) -> list[Layer]:
    if names is None:
        return list_layers(net)
    if isinstance(names, str):
        raise TypeError(f"layers are a list of names, e.g. [{names!r}], not a string")
    if not names:
        raise ValueError(f"an empty layer list was given for {net.name}; pass None for the default layers "
                         f"(list_layers(model))")
    return [name if isinstance(name, Layer) else resolve_layer(net, name) for name in names]


def _folded_batches(data, batch_size: int, device):
    """``data``'s images in batches of ``batch_size``; a last batch of fewer than 4 joins the one before.

    Only the images of one batch are held back (never activations), matching :func:`minibatch_spans`."""
    pending = None
    for images, _ in data.batches(batch_size, device):
        if pending is not None and len(images) < MIN_BATCH:
            pending = torch.cat([pending, images])
            continue
        if pending is not None:
            yield pending
        pending = images
    if pending is not None:
        yield pending


def _labels(net, layers: list[Layer]) -> list[str]:
    """Layer names as error messages name them: ``'layer2.0' of zoo/resnet_1111-s0``."""
    return [f"{lay.name!r} of {net.name}" for lay in layers]


def _activations(net_a, net_b, la: list[Layer], lb: list[Layer], data, batch_size: int, device, cancel):
    """``(side a's activations, side b's)`` at ``la`` and ``lb``, batch by batch (:func:`_folded_batches`),
    on ``device``; ``cancel`` is asked before every batch.

    Each network runs once per batch up to all its layers; the same network on both sides runs
    once, and a layer on both sides is then one tensor. Gradients are off only while the
    networks run (a generator that held ``no_grad`` across its yields would switch them off in
    the caller's code too)."""
    same = net_a is net_b
    passes = [(net_a, engine_prefix(net_a, la + lb if same else la))]
    if not same:
        passes.append((net_b, engine_prefix(net_b, lb)))
    data = data.to(_device_of(net_a.module))  # once (a few MB of uint8), not batch by batch
    for images in _folded_batches(data, batch_size, None):
        check_cancel(cancel)
        with torch.no_grad():
            outs = [prefix(net.prepare(images.to(_device_of(net.module)))) for net, prefix in passes]
        feats = [x.to(device) for out in outs for x in out]  # side a's layers, then side b's
        yield feats[:len(la)], feats[len(la):]


def model_cka(model_a, model_b, layers_a=None, layers_b=None, dataset: str = "fashion-mnist",
              limit: int | None = None, batch_size: int = 500, kernel: str = "linear", sigma: float = 0.8,
              device="auto", progress=None, cancel=None, gram: str = "auto") -> CkaResult:
    """Minibatch CKA between every layer of ``model_a`` and every layer of ``model_b``.

    The test split of ``dataset`` (its first ``limit`` images) streams through both networks
    once; each batch's activations are folded into a :class:`MinibatchCKA` and dropped, so
    memory is one batch whatever the dataset size. A last batch of fewer than 4 images is
    folded into the one before it (no image is dropped).

    Args:
        model_a, model_b: registry names (``"zoo/resnet_1111-s0"``) or :class:`core.models.network.Network`s.
        layers_a, layers_b: layer names (see :func:`core.engine.layers.list_layers`); default: the
            layers a stitching grid uses (stem and every block), so CKA cell (i, j) and
            stitching cell (i, j) describe the same two activations.
        batch_size: examples per minibatch, at least 4.
        kernel, sigma: as in :func:`cka_matrix`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; names are loaded there. A Network is run
            where it lives (with ``"auto"``, the first one's device is used for the HSIC sums).
        progress: called with a :class:`core.progress.Progress` after every batch.
        gram: the Gram matrices' precision: ``"auto"`` (float32 on a CPU, float64 on a GPU),
            ``"float64"``, ``"float32"`` or ``"tf32x3"``; see :class:`core.similarity.cka.MinibatchCKA`
            and BENCHMARKS.md for speed and accuracy.
        cancel: a callable asked before every batch; returning True stops the run with
            :class:`core.errors.Cancelled`.

    Example::

        >>> r = model_cka("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", limit=1000)
        >>> r.layers_a, len(r.cka), len(r.cka[0])
        (['stem', 'layer1.0', 'layer2.0', 'layer3.0', 'layer4.0'], 5, 5)
    """
    start = time.perf_counter()
    report = Reporter(progress, start)
    check_kernel(kernel, sigma)
    check_minibatch(batch_size, MIN_BATCH)
    device = _compute_device(device, model_a, model_b)
    net_a, net_b = _network(model_a, device), _network(model_b, device)
    la, lb = _layers(net_a, layers_a), _layers(net_b, layers_b)
    data = load_dataset(dataset, "test", limit)
    if len(data) < MIN_BATCH:
        raise ValueError(f"minibatch CKA needs at least {MIN_BATCH} test images, got {len(data)} "
                         f"(limit={limit}); raise the limit")
    acc = MinibatchCKA(len(la), len(lb), kernel, sigma, _labels(net_a, la), _labels(net_b, lb), gram=gram)
    total = len(minibatch_spans(len(data), batch_size))
    for b, (feats_a, feats_b) in enumerate(_activations(net_a, net_b, la, lb, data, batch_size, device, cancel)):
        acc.update(feats_a, feats_b)
        report("cka", (b + 1) / total, f"CKA: batch {b + 1}/{total} ({acc.n_examples} images)")
    return CkaResult(net_a.name, net_b.name, [lay.name for lay in la], [lay.name for lay in lb],
                     acc.result().tolist(), kernel, batch_size, acc.n_examples, time.perf_counter() - start)


@dataclass
class SimilarityResult:
    """Similarity indices between every layer of two networks, on the same images.

    ``measures[name]``: index ``name``'s ``matrix`` (``matrix[i][j]``: layer ``layers_a[i]`` vs
    ``layers_b[j]``), its ``label``, ``higher_is_similar`` (False: a distance), ``summary``, and
    ``seconds`` (its own computation; collecting the features, shared by all indices, took
    ``features_seconds``). ``feature_bytes``: the features held while the indices ran."""

    model_a: str
    model_b: str
    layers_a: list[str]
    layers_b: list[str]
    dataset: str
    n_examples: int
    measures: dict[str, dict]
    features_seconds: float
    feature_bytes: int
    seconds: float

    def to_json(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b, "layers_a": self.layers_a,
                "layers_b": self.layers_b, "dataset": self.dataset, "n_examples": self.n_examples,
                "measures": {name: {**m, "seconds": round(m["seconds"], 3)} for name, m in self.measures.items()},
                "features_seconds": round(self.features_seconds, 3), "feature_bytes": self.feature_bytes,
                "seconds": round(self.seconds, 3)}


def model_similarity(model_a, model_b, measures, layers_a=None, layers_b=None, dataset: str = "fashion-mnist",
                     limit: int | None = None, device="auto", progress=None, cancel=None, batch_size: int = 500,
                     budget: int = FEATURE_BUDGET) -> SimilarityResult:
    """Every index in ``measures`` between every layer of ``model_a`` and every layer of ``model_b``.

    The test split of ``dataset`` (its first ``limit`` images) runs through both networks once,
    in batches; the activations are kept, float32 on the CPU, and every index is computed from
    them (:data:`core.similarity.measures.MEASURES`), on the CPU, one after another.

    Memory: the features of every image at every layer, n x (the layers' per-image sizes,
    summed over both sides) x 4 bytes, held at once: ResNet-1111 vs ResNet-2222 at their default
    layers take 0.5 MB an image, so 1.0 GB at 2,000 images and 5.0 GB at 10,000. An image
    count whose features would exceed ``budget`` bytes (default 4 GiB) is refused before any
    image is run, naming the most that fit. The indices work on top of that (full-batch CKA: one
    n x n float64 kernel per layer, 32 MB at 2,000 images).

    Args:
        model_a, model_b: registry names (``"zoo/resnet_1111-s0"``) or :class:`core.models.network.Network`s.
        measures: index names, e.g. ``["linear-cka", "svcca"]`` (see :data:`core.similarity.measures.MEASURES`);
            a name given twice is computed once.
        layers_a, layers_b: layer names; default: the layers a stitching grid uses, so cell (i, j)
            of every index and of the stitching grid describe the same two activations.
        dataset, limit: the test images (all when ``limit`` is None).
        device: where the networks run (``"auto"``, ``"cpu"``, ``"cuda"``); the indices run on the CPU.
        progress: called with a :class:`core.progress.Progress` after every batch and every index.
        cancel: asked before every batch and every index; True stops with :class:`core.errors.Cancelled`
            (an index in flight finishes first).
        batch_size: images per forward pass (memory on the device, not the result).
        budget: the most bytes of features to hold.

    Example::

        >>> r = model_similarity("zoo/resnet_1111-s0", "zoo/resnet_1111-s1", ["linear-cka", "rbf-cka"], limit=500)
        >>> r.layers_a, len(r.measures["rbf-cka"]["matrix"])
        (['stem', 'layer1.0', 'layer2.0', 'layer3.0', 'layer4.0'], 5)
    """
    from core.similarity.measures import MEASURES

    start = time.perf_counter()
    report = Reporter(progress, start)
    names = check_measure_names(measures)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = _compute_device(device, model_a, model_b)
    net_a, net_b = _network(model_a, device), _network(model_b, device)
    la, lb = _layers(net_a, layers_a), _layers(net_b, layers_b)
    data = load_dataset(dataset, "test", limit)
    n = len(data)
    # The same network on both sides computes a layer named on both sides once (one tensor).
    only_b = [lay for lay in lb if not (net_a is net_b and lay.node in {a.node for a in la})]
    need = check_feature_budget(n, [lay.shape for lay in la], [lay.shape for lay in only_b], budget)
    share = 1 / (1 + len(names))  # collecting the features weighs about as much as one index
    collect, total = report.span(0.0, share), len(minibatch_spans(n, batch_size))
    slots, buffers, done = None, {}, 0
    for b, (xa, xb) in enumerate(_activations(net_a, net_b, la, lb, data, batch_size, device, cancel)):
        xs = [*xa, *xb]
        if slots is None:  # position -> the first position holding the same tensor; one buffer each
            first: dict[int, int] = {}
            slots = [first.setdefault(id(x), k) for k, x in enumerate(xs)]
            buffers = {k: torch.empty((n, *xs[k].shape[1:]), dtype=torch.float32) for k in set(slots)}
        for k, buffer in buffers.items():
            buffer[done:done + len(xs[k])].copy_(xs[k])  # to the CPU, float32, contiguous
        done += len(xs[0])
        collect("features", (b + 1) / total, f"Features: batch {b + 1}/{total} ({done} images)")
    assert done == n, (done, n)
    feats = [buffers[k] for k in slots]
    feats_a, feats_b = feats[:len(la)], feats[len(la):]
    features_seconds = time.perf_counter() - start

    results: dict[str, dict] = {}
    for k, name in enumerate(names):
        check_cancel(cancel)
        measure = MEASURES[name]
        report("similarity", share + k * (1 - share) / len(names), f"{measure.label} ({k + 1}/{len(names)})")
        began = time.perf_counter()
        try:
            matrix = measure.matrix(feats_a, feats_b, _labels(net_a, la), _labels(net_b, lb))
        except ValueError as exc:
            raise ValueError(f"{measure.label}: {exc}") from None
        assert tuple(matrix.shape) == (len(la), len(lb)), (name, tuple(matrix.shape))
        _check_finite(matrix, measure.label, _labels(net_a, la), _labels(net_b, lb))
        results[name] = {"label": measure.label, "higher_is_similar": measure.higher_is_similar,
                         "summary": measure.summary, "matrix": matrix.tolist(),
                         "seconds": time.perf_counter() - began}
    report("similarity", 1.0, f"{len(names)} similarity measure(s) on {n:,} images")
    return SimilarityResult(net_a.name, net_b.name, [lay.name for lay in la], [lay.name for lay in lb], dataset, n,
                            results, features_seconds, need, time.perf_counter() - start)


def _check_finite(matrix: torch.Tensor, label: str, names_a: list[str], names_b: list[str]) -> None:
    """An index that cannot say is an error naming the pair, never a NaN drawn as a cell."""
    bad = (~torch.isfinite(matrix)).nonzero()
    if len(bad):
        i, j = bad[0].tolist()
        raise ValueError(f"{label} is undefined for {names_a[i]} vs {names_b[j]} (it came out {matrix[i, j].item()}); "
                         f"use more images, or another index")


def stitch_cka(sender, receiver, sender_layer: str, receiver_layer: str, stitch, dataset: str = "fashion-mnist",
               limit: int | None = 2000, batch_size: int = 500, device="auto", cancel=None) -> float:
    """Linear minibatch CKA between a stitch's output and the receiver's own activation.

    Does the stitch reproduce what the receiver computes at ``receiver_layer`` (CKA near 1),
    or does it find some other representation that the receiver's suffix also accepts?
    The stitch is applied to the sender's activation at ``sender_layer`` on the test images;
    the receiver runs on the same images up to ``receiver_layer``. The stitch is run in
    eval mode and left in the mode it was in.

    Args:
        sender, receiver: registry names or :class:`core.models.network.Network`s.
        stitch: a :class:`core.engine.stitches.Stitch` from ``sender_layer``'s shape to ``receiver_layer``'s.
        dataset, limit, batch_size, device, cancel: as in :func:`model_cka`.

    Example::

        >>> net = load_model("zoo/resnet_1111-s0")
        >>> s = make_stitch((32, 16, 16), (32, 16, 16)).identity_()
        >>> stitch_cka(net, net, "layer2.0", "layer2.0", s, limit=500)
        1.0
    """
    check_minibatch(batch_size, MIN_BATCH)
    device = _compute_device(device, sender, receiver)
    s_net, r_net = _network(sender, device), _network(receiver, device)
    s_layer, r_layer = resolve_layer(s_net, sender_layer), resolve_layer(r_net, receiver_layer)
    if tuple(stitch.sender_shape) != s_layer.shape or tuple(stitch.receiver_shape) != r_layer.shape:
        raise ValueError(f"the stitch maps {tuple(stitch.sender_shape)} -> {tuple(stitch.receiver_shape)}, but "
                         f"{s_layer.name!r} of {s_net.name} is {s_layer.shape} and {r_layer.name!r} of {r_net.name} "
                         f"is {r_layer.shape}; pass the stitch made for these two layers")
    data = load_dataset(dataset, "test", limit)
    if len(data) < MIN_BATCH:
        raise ValueError(f"minibatch CKA needs at least {MIN_BATCH} test images, got {len(data)} "
                         f"(limit={limit}); raise the limit")
    s_device = _device_of(s_net.module)
    # Run a copy where the sender lives rather than moving the caller's stitch.
    module = stitch if _device_of(stitch) == s_device else copy.deepcopy(stitch).to(s_device)
    modes = {m: m.training for m in stitch.modules()}
    acc = MinibatchCKA(1, 1, "linear", names_a=[f"the stitch's output ({s_layer.name!r} of {s_net.name} -> "
                                                f"{r_layer.name!r})"],
                       names_b=[f"{r_layer.name!r} of {r_net.name}"])
    s_prefix, r_prefix = sender_prefix(s_net, [s_layer]), sender_prefix(r_net, [r_layer])
    module.eval()
    try:
        with torch.no_grad():
            for images in _folded_batches(data, batch_size, device):
                check_cancel(cancel)
                (activation,) = s_prefix(s_net.prepare(images.to(s_device)))
                (target,) = r_prefix(r_net.prepare(images.to(_device_of(r_net.module))))
                acc.update([module(activation).to(device)], [target.to(device)])
    finally:
        for m, training in modes.items():
            m.train(training)
    return float(acc.result()[0, 0])
