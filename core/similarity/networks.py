"""CKA of networks: every layer of one against every layer of another, streamed over a dataset.

The estimators themselves are in :mod:`core.similarity.cka`; this module feeds them activations: each
network runs once per batch up to all its layers (:func:`core.engine.layers.sender_prefix`), the
batch is folded into a :class:`core.similarity.cka.MinibatchCKA` and dropped, so memory is one batch
whatever the dataset size.

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
from core.similarity.cka import MIN_BATCH, MinibatchCKA, check_kernel, check_minibatch, minibatch_spans

__all__ = ["CkaResult", "model_cka", "stitch_cka"]


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
    acc = MinibatchCKA(len(la), len(lb), kernel, sigma, [f"{lay.name!r} of {net_a.name}" for lay in la],
                       [f"{lay.name!r} of {net_b.name}" for lay in lb], gram=gram)
    same = net_a is net_b  # one pass yields both sides; a layer on both sides is one tensor
    passes = [(net_a, engine_prefix(net_a, la + lb if same else la))]
    if not same:
        passes.append((net_b, engine_prefix(net_b, lb)))
    total = len(minibatch_spans(len(data), batch_size))
    data = data.to(_device_of(net_a.module))  # once (a few MB of uint8), not batch by batch
    with torch.no_grad():
        for b, images in enumerate(_folded_batches(data, batch_size, None)):
            check_cancel(cancel)
            outs = [prefix(net.prepare(images.to(_device_of(net.module)))) for net, prefix in passes]
            feats = [x.to(device) for out in outs for x in out]  # side a's layers, then side b's
            acc.update(feats[:len(la)], feats[len(la):])
            report("cka", (b + 1) / total, f"CKA: batch {b + 1}/{total} ({acc.n_examples} images)")
    return CkaResult(net_a.name, net_b.name, [lay.name for lay in la], [lay.name for lay in lb],
                     acc.result().tolist(), kernel, batch_size, acc.n_examples, time.perf_counter() - start)


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
