"""Attributions (captum) for the sender, the receiver and a stitched network, on the same images.

Every method is used the same way: ``attribute(model, inputs, target=..., method=...)`` with
``model`` a :class:`core.models.network.Network` or a :class:`StitchedClassifier` (a stitched network
dressed as one), and ``inputs`` images in [0, 1] of shape ``(N, C, H, W)``. Attributions are
taken with respect to the network's *normalised* input (what its module sees) and returned as
``(N, H, W)`` maps at the resolution of ``inputs``, channels summed.

================  ===================  ===================================================
method            captum               notes
================  ===================  ===================================================
``ig``            IntegratedGradients  baseline: zeros in normalised space (the mean image)
``saliency``      Saliency             absolute gradient (unsigned)
``gradientshap``  GradientShap         baselines: that baseline plus seeded noise images
``occlusion``     Occlusion            a (C, 4, 4) window, stride 2, per 32 input pixels
``gradcam``       LayerGradCam         at a layer (default: the last spatial one, or the
                                       stitch), ReLU, upsampled with captum's
                                       ``LayerAttribution.interpolate``
================  ===================  ===================================================

Attribution leaves every model as it found it: train/eval flags are restored and every hook
added during the call is removed, in ``finally``, even when the forward pass raises. Models
are shared between threads (the app serves many sessions), so attributions on one module are
serialised by a per-module lock: one session's hooks never touch another's forward pass.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.attribution.hygiene import exclusive, left_as_found, node_module, roots_of
from core.attribution.maps import METHOD_LABELS, METHODS, SIGNED, Attribution, attribution_figure

__all__ = ["METHODS", "METHOD_LABELS", "Attribution", "attribute", "compare", "attribution_figure"]

_NOISE_BASELINES = 4  # GradientShap: noise images besides the plain baseline; enough to vary, cheap
_BATCH_ELEMENTS = 4_000_000  # input elements per internal batch: ~16 MB of input, bounded activations


# --- attribution ---------------------------------------------------------------------------------
def attribute(model, inputs: torch.Tensor, target=None, method: str = "ig", layer: str | None = None,
              baseline=None, seed: int = 0, **kwargs) -> Attribution:
    """Attribute ``model``'s output for ``target`` to its input pixels with one captum method.

    Args:
        model: a :class:`core.models.network.Network` or a :class:`StitchedClassifier`.
        inputs: images in [0, 1], ``(N, C, H, W)`` (or one ``(C, H, W)`` image).
        target: class index (int) or one per image; ``None``: the network's own prediction.
        method: one of :data:`METHODS` (default ``"ig"``).
        layer: Grad-CAM only: a layer name (``list_layers(model)``); default the last spatial
            layer, or the stitch for a stitched network.
        baseline: ``ig``/``gradientshap``/``occlusion``: images in [0, 1] (broadcastable to
            ``inputs``) or a constant in [0, 1]; default zeros in the normalised space.
        seed: GradientShap's noise baselines and sampling (same seed, same maps).
        **kwargs: passed to captum's ``attribute`` (``n_steps``, ``n_samples``,
            ``sliding_window_shapes``, ``strides``, ``internal_batch_size``, ...).

    Example::

        >>> net = load_model("zoo/resnet_1111-s0")
        >>> result = attribute(net, torch.rand(2, 1, 32, 32), method="saliency")
        >>> result.raw.shape, result.predictions.shape, result.probabilities.shape
        ((2, 32, 32), (2,), (2, 10))
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}: choose one of {', '.join(METHODS)}")
    if layer is not None and method != "gradcam":
        raise ValueError(f"layer={layer!r} applies only to method 'gradcam', not {method!r}")
    images = _check_images(inputs)
    start = time.perf_counter()
    roots = roots_of(model)
    device = next((p.device for root in roots for p in root.parameters()), torch.device("cpu"))
    with exclusive(roots), left_as_found(roots), torch.inference_mode(False), torch.enable_grad():
        images = images.detach().to(device, torch.float32).clone()  # a clone: never an inference tensor
        x = model.prepare(images).detach().requires_grad_()  # (N, C', H', W'): what the module sees
        with torch.no_grad():
            logits = model.module(x.detach())
        probabilities = logits.float().softmax(-1)
        predictions = probabilities.argmax(-1)
        targets = _targets(target, predictions, probabilities.shape[-1], model.name)
        maps, delta, layer_name = _run_method(model, method, x, images, targets, layer, baseline, seed, kwargs)
    raw = _to_image_size(maps.detach().float(), images.shape[2:], additive=method != "gradcam")
    raw = raw[:, 0].cpu().numpy().astype(np.float32)  # (N, H, W)
    signed = SIGNED[method]
    return Attribution(method, raw, _display(raw, signed), signed, predictions.cpu().numpy(),
                       probabilities.cpu().numpy().astype(np.float32), targets.cpu().numpy(),
                       time.perf_counter() - start, model.name, layer_name,
                       None if delta is None else delta.detach().cpu().numpy().astype(np.float32))


def _run_method(model, method, x, images, targets, layer, baseline, seed, kwargs):
    """(maps ``(N, 1, H', W')``, convergence delta or None, layer name or None)."""
    from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    forward = model.module
    per_example = x[0].numel()
    if method == "saliency":
        maps = Saliency(forward).attribute(x, target=targets, **{"abs": True, **kwargs})
        return maps.sum(1, keepdim=True), None, None
    if method == "ig":
        options = {"n_steps": 50, "internal_batch_size": max(len(x), _BATCH_ELEMENTS // per_example),
                   "return_convergence_delta": True, **kwargs}
        out = IntegratedGradients(forward).attribute(x, baselines=_baseline(model, baseline, images, x),
                                                     target=targets, **options)
        maps, delta = out if options["return_convergence_delta"] else (out, None)
        return maps.sum(1, keepdim=True), delta, None
    if method == "gradientshap":
        plain = _baseline(model, baseline, images, x)[:1]  # (1, C', H', W')
        generator = torch.Generator().manual_seed(seed)
        noise = torch.rand(_NOISE_BASELINES, *images.shape[1:], generator=generator).to(images.device)
        baselines = torch.cat([plain, model.prepare(noise)])  # (1 + noise, C', H', W')
        # captum draws baselines (torch) and interpolation points (numpy) from the global RNGs:
        # seed both, and give the caller's states back.
        with _RNG_LOCK, torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
            numpy_state = np.random.get_state()
            try:
                torch.manual_seed(seed)
                np.random.seed(seed)
                maps = GradientShap(forward).attribute(x, baselines=baselines, target=targets,
                                                       **{"n_samples": 20, **kwargs})
            finally:
                np.random.set_state(numpy_state)
        return maps.sum(1, keepdim=True), None, None
    if method == "occlusion":
        c, h, w = x.shape[1:]
        window = (c, max(1, round(4 * h / 32)), max(1, round(4 * w / 32)))
        strides = (c, max(1, round(2 * h / 32)), max(1, round(2 * w / 32)))
        options = {"sliding_window_shapes": window, "strides": strides,
                   "perturbations_per_eval": max(1, min(64, _BATCH_ELEMENTS // (per_example * len(x)))), **kwargs}
        maps = Occlusion(forward).attribute(x, baselines=_baseline(model, baseline, images, x), target=targets,
                                            **options)
        return maps.sum(1, keepdim=True), None, None
    module, name = _gradcam_module(model, layer)
    try:
        maps = LayerGradCam(forward, module).attribute(x, target=targets, **{"relu_attributions": True, **kwargs})
    except AssertionError as exc:  # captum: the hook never fired
        raise ValueError(f"Grad-CAM layer {name!r} does not run in {model.name}'s forward pass; choose another "
                         f"(list_layers(model))") from exc
    if maps.dim() != 4:
        raise ValueError(f"Grad-CAM needs a spatial (C, H, W) layer, but {name!r} of {model.name} outputs "
                         f"{tuple(maps.shape[1:])} per image; choose a 'map' layer from list_layers(model)")
    return LayerAttribution.interpolate(maps, tuple(images.shape[2:]), "bilinear"), None, name


_RNG_LOCK = threading.Lock()  # the global RNG is process-wide: seeded GradientShap calls take turns


def _gradcam_module(model, layer: str | None) -> tuple[nn.Module, str]:
    if hasattr(model, "gradcam_module"):
        return model.gradcam_module(layer)
    from core.engine.layers import UntraceableError, list_layers

    if layer is None:
        maps = [lay for lay in list_layers(model) if lay.kind == "map"]
        if not maps:
            raise ValueError(f"{model.name} has no spatial layer for Grad-CAM; use another method")
        layer = maps[-1].name
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"a Grad-CAM layer is a layer name such as 'layer3.0', got {layer!r}")
    try:
        module = model.module.get_submodule(layer)
    except AttributeError:
        return node_module(model, layer, (-1, None), f"of {model.name}"), layer
    if next(module.children(), None) is None:  # a leaf may run several times: check it is the call asked for
        try:
            node_module(model, layer, (-1, None), f"of {model.name}")
        except UntraceableError:  # no graph to check against: trust the name
            pass
    return module, layer


def _check_images(inputs) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor of images in [0, 1], (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(0)
    if inputs.dim() != 4 or len(inputs) == 0:
        raise ValueError(f"inputs must be images (N, C, H, W) with N >= 1, got shape {tuple(inputs.shape)}")
    lo, hi = float(inputs.min()), float(inputs.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"inputs must be images in [0, 1] (before normalisation; the model's prepare() "
                         f"normalises), got values in [{lo:.3g}, {hi:.3g}]")
    return inputs


def _targets(target, predictions: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    if target is None:
        return predictions
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must be class indices (int), got {t.dtype}")
    t = t.to(predictions.device, torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(len(predictions))
    if t.numel() != len(predictions):
        raise ValueError(f"target has {t.numel()} entries for {len(predictions)} images: give one int, "
                         f"or one per image")
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.numel():
        raise ValueError(f"target class {int(bad[0])} is out of range for {name}, which has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return t.contiguous()


def _baseline(model, baseline, images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The baseline in the normalised space, shaped like ``x``."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        baseline = torch.full_like(images, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be None, a number or images in [0, 1], got {type(baseline).__name__}")
    baseline = baseline.to(images.device, torch.float32)
    baseline = baseline.unsqueeze(0) if baseline.dim() == 3 else baseline
    if baseline.dim() != 4 or len(baseline) not in (1, len(images)):
        raise ValueError(f"baseline must be images (1 or N, C, H, W) in [0, 1], got shape {tuple(baseline.shape)}")
    _check_images(baseline)
    return model.prepare(baseline).expand_as(x).contiguous()


def _to_image_size(maps: torch.Tensor, size, additive: bool) -> torch.Tensor:
    """``(N, 1, H', W')`` -> ``(N, 1, H, W)``. Additive maps (per-pixel shares of the output) are
    scaled by the area ratio so that each map keeps (about) its sum: exactly so for an integer
    shrink (area pooling), as a bilinear approximation when growing."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    ratio = maps.shape[2] * maps.shape[3] / (size[0] * size[1])
    shrinking = maps.shape[2] >= size[0] and maps.shape[3] >= size[1]
    resized = F.interpolate(maps, size=tuple(size), mode="area" if shrinking else "bilinear",
                            **({} if shrinking else {"align_corners": False}))
    return resized * ratio if additive else resized


def _display(raw: np.ndarray, signed: bool) -> np.ndarray:
    flat = np.abs(raw.reshape(len(raw), -1))
    scale = np.percentile(flat, 99, axis=1)
    scale = np.where(scale > 0, scale, flat.max(axis=1))  # sparse maps: fall back to the maximum
    scale = np.where(scale > 0, scale, 1.0)  # all-zero maps stay zero
    display = raw / scale[:, None, None]
    return np.clip(display, -1.0 if signed else 0.0, 1.0).astype(np.float32)


# --- sender, receiver and stitched network side by side ---------------------------------------------
def compare(sender, receiver, stitched, images: torch.Tensor, target=None, method: str = "ig", seed: int = 0,
            layers: dict | None = None, **kwargs) -> dict[str, Attribution]:
    """The same method on the same images and target for ``"sender"``, ``"receiver"`` and ``"stitched"``.

    ``target`` defaults to the receiver's prediction (the stitched network answers the
    receiver's task); pass the true labels to explain those instead. ``stitched`` may be a
    :class:`StitchedClassifier`, a bare StitchedNetwork (wrapped here) or None (two keys only).
    ``layers`` names Grad-CAM layers per key, e.g. ``{"sender": "layer2.0", "stitched": "stitch"}``.

    Example::

        >>> maps = compare(a, b, load_stitched(store, run_id, "layer3.0", "layer2.0"), images)
        >>> sorted(maps), maps["sender"].target.tolist() == maps["stitched"].target.tolist()
        (['receiver', 'sender', 'stitched'], True)
    """
    layers = dict(layers or {})
    unknown = set(layers) - {"sender", "receiver", "stitched"}
    if unknown:
        raise ValueError(f"layers keys are 'sender', 'receiver' and 'stitched', got {sorted(unknown)}")
    if stitched is not None and not hasattr(stitched, "prepare"):
        from core.engine.stitched import StitchedClassifier

        stitched = StitchedClassifier(sender, stitched, receiver)
    images = _check_images(images)
    if target is None:
        device = next((p.device for p in receiver.module.parameters()), torch.device("cpu"))
        with exclusive([receiver.module]), left_as_found([receiver.module]), torch.no_grad():
            target = receiver.module(receiver.prepare(images.to(device, torch.float32))).argmax(-1)
    models = {"sender": sender, "receiver": receiver, "stitched": stitched}
    return {key: attribute(model, images, target, method, layers.get(key) if method == "gradcam" else None,
                           seed=seed, **kwargs)
            for key, model in models.items() if model is not None}
