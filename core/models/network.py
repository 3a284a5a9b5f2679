"""The model registry: one ``load_model(name)`` for every kind of network StitchLab compares.

Names:

* ``zoo/NAME``: a bundled, pretrained network (``assets/zoo/manifest.json``; sha256 checked).
* ``paper/NAME``: a network of the seed paper's scale trained by ``python -m core zoo train
  --preset paper`` (in ``$STITCHLAB_HOME/zoo-paper``).
* ``torchvision/ARCH``: any torchvision classification architecture with its ImageNet
  weights (downloaded by torchvision when online, or already in its cache).
* ``file:PATH``: a safetensors checkpoint saved by StitchLab (architecture in its metadata),
  or any safetensors / weights-only torch file together with ``config=`` (an architecture).
* any of the above with ``@random`` or ``@random:SEED``: the same architecture, freshly
  initialised with that seed (default 0): the random-network controls of the seed paper.

A loaded :class:`Network` is frozen: eval mode, no parameter requires grad.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import torch
import torchvision
from torch import nn

from core import paths
from core.data.datasets import FASHION_MNIST
from core.models import sources, zoo
from core.models.architectures import build_architecture, classes_of, input_channels, with_class_count
from core.models.checkpoints import CheckpointError, build_from_state, check_metadata, read_checkpoint

__all__ = ["Network", "load_model", "cached_model", "list_models", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=64)
def _channel_constants(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-channel constants as a (1, C, 1, 1) tensor, made once per device: building them for
    every batch is a blocking host-to-GPU copy in the middle of the hot loop."""
    return torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)


@dataclass
class Network:
    """A frozen classifier and how to feed it.

    ``module`` takes normalised inputs of ``input_shape``; :meth:`prepare` turns images in
    [0, 1] of any size and channel count into that. ``config`` rebuilds the architecture
    (for random copies); ``info`` holds what the registry knows (accuracy, parameters, ...).
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: dict
    dataset: str | None = None
    info: dict = field(default_factory=dict)
    # Its accuracy on its own, by test set and layout, kept by core.engine.grid between grids: a
    # long-lived worker scores a (frozen) network once per test set, not once per grid.
    scores: dict = field(default_factory=dict, repr=False, compare=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], ``(N, C, H, W)`` -> this network's normalised input."""
        c, h, w = self.input_shape
        if images.shape[1] != c:
            if images.shape[1] == 1:
                images = images.expand(-1, c, -1, -1)
            elif images.shape[1] == 3 and c == 1:
                images = torchvision.transforms.functional.rgb_to_grayscale(images)
            else:
                raise ValueError(f"{self.name} takes {c}-channel images; cannot adapt {images.shape[1]} channels")
        if tuple(images.shape[2:]) != (h, w):
            images = nn.functional.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
        mean = _channel_constants(tuple(self.mean), images.device, images.dtype)
        std = _channel_constants(tuple(self.std), images.device, images.dtype)
        return (images - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.module(self.prepare(images))

    def to(self, device) -> Network:
        self.module.to(device)
        return self

    def random_copy(self, seed: int = 0) -> Network:
        """The same architecture with fresh weights from ``seed`` (BatchNorm at its initial statistics)."""
        device = next(self.module.parameters()).device
        return _named_random(replace(self, module=freeze(_seeded_build(self.config, seed).to(device))), seed)


def _named_random(net: Network, seed: int) -> Network:
    """``net`` (whose module was built from ``seed``) under its ``@random:SEED`` name."""
    return replace(net, name=sources.random_name(net.name, seed),
                   info={**net.info, "random_seed": seed, "test_accuracy": None})


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _seeded_build(config: dict, seed: int) -> nn.Module:
    # fork_rng keeps the caller's global random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_architecture(config)


def cached_model(name: str, device: str = "cpu") -> Network:
    """:func:`load_model` through a process-wide cache of 16 networks. Networks are frozen, so one
    loaded copy per (name, weights, device) serves every grid, CKA and attribution of a worker.
    The weights' fingerprint is part of the key: an upload saved again under its name is reloaded."""
    return _cached_model(name, device, sources.fingerprint(name))


@functools.lru_cache(maxsize=16)
def _cached_model(name: str, device: str, fingerprint: str) -> Network:
    return load_model(name, device)


def load_model(name: str, device: str | torch.device = "cpu", config: dict | None = None) -> Network:
    """Load a network by registry name (see the module docstring), frozen, on ``device``.

    ``config`` gives the architecture of a ``file:`` checkpoint that does not carry one
    (e.g. ``{"arch": "resnet", "blocks": [1, 1, 1, 1], "width": 16}``, or the ``config`` of a
    zoo entry).

    Example::

        >>> net = load_model("zoo/resnet_1111-s0")
        >>> net(torch.rand(8, 1, 32, 32)).shape
        torch.Size([8, 10])
    """
    model = sources.parse(name)
    sources.check_budget(name)  # before anything is built: a link or a typo must not fill the memory
    seed = model.seed
    if model.source == "zoo/":
        net = _load_zoo(model.key, seed)
    elif model.source == "paper/":
        net = _load_zoo(model.key, seed, prefix="paper", zoo_dir=paths.home() / "zoo-paper")
    elif model.source == "torchvision/":
        net = _load_torchvision(model.key, seed)
    else:  # file: the checkpoint's architecture may live only in the file
        net = _load_file(model.key, config)
        net = net if seed is None else net.random_copy(seed)
    return net.to(device)


def _load_zoo(name: str, seed: int | None, prefix: str = "zoo", zoo_dir=None) -> Network:
    """A zoo network, or (``seed`` given) its architecture with random weights from ``seed``."""
    entry = zoo.zoo_entry(name, zoo_dir)
    config = entry["config"]
    if seed is not None:  # the control needs only the architecture; skip reading weights
        module = _seeded_build(config, seed)
    else:
        state, _ = read_checkpoint(zoo.verified_weights(entry, zoo_dir))
        module = build_from_state(config, state, f"{prefix}/{name}")
    net = Network(f"{prefix}/{name}", freeze(module), tuple(entry["input_shape"]), classes_of(config),
                  tuple(entry["mean"]), tuple(entry["std"]), config, entry.get("dataset"), dict(entry))
    return net if seed is None else _named_random(net, seed)


def _load_torchvision(arch: str, seed: int | None) -> Network:
    """torchvision's ImageNet network, or (``seed`` given) its architecture with random weights."""
    config = {"arch": "torchvision", "name": arch}
    module = build_architecture(config) if seed is None else _seeded_build(config, seed)  # validates the name
    info: dict = {"architecture": arch}
    if seed is None:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # URLError, HTTPError, socket errors ...
            raise ValueError(
                f"ImageNet weights for torchvision/{arch} could not be had ({type(exc).__name__}: {exc}); "
                f"connect to the internet once (torchvision caches them), or use 'torchvision/{arch}@random' "
                f"for random weights, or 'file:PATH' for a checkpoint you have") from None
        module.load_state_dict(state)
        info["test_accuracy"] = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
        info["dataset"] = "imagenet"
    # A ViT takes only the image size it was built for (vit_h_14: 224), not its default weights' crop (518)
    size = getattr(module, "image_size", None) or _torchvision_input_size(arch)
    net = Network(f"torchvision/{arch}", freeze(module), (3, size, size), 1000, IMAGENET_MEAN, IMAGENET_STD,
                  config, "imagenet", info)
    return net if seed is None else _named_random(net, seed)


def _torchvision_input_size(arch: str) -> int:
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        crop = weights.transforms().crop_size
        return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    except Exception:
        return 224


def _load_file(path: str, config: dict | None) -> Network:
    state, meta = read_checkpoint(path)
    meta = dict(meta or {})
    given = config is not None
    config = meta["config"] = config if given else meta.get("config")
    if config is None:
        raise CheckpointError(f"{path} carries no architecture: pass config= (python: load_model(..., config=...)); "
                              f"StitchLab's own safetensors files carry it in their metadata")
    check_metadata(meta, path, config_from_file=not given)  # before building: a forged size is refused at once
    config = meta["config"] = with_class_count(config, state)
    module = build_from_state(config, state, path)
    dataset = meta.get("dataset", "fashion-mnist")
    # The network's own channel count (a torchvision file without metadata takes 3-channel images).
    size = FASHION_MNIST.image_shape[1:] if dataset == "fashion-mnist" else (32, 32)
    default_shape = (input_channels(config), *size)
    mean = meta.get("mean", FASHION_MNIST.mean if dataset == "fashion-mnist" else (0.5,) * default_shape[0])
    std = meta.get("std", FASHION_MNIST.std if dataset == "fashion-mnist" else (0.25,) * default_shape[0])
    return Network(f"file:{path}", freeze(module), tuple(meta.get("input_shape", default_shape)),
                   classes_of(config), tuple(mean), tuple(std), config, dataset, dict(meta))


def list_models() -> list[dict]:
    """One row per zoo model: name, architecture, parameters, accuracy, dataset, size on disk."""
    rows = []
    for entry in zoo.read_manifest()["models"]:
        rows.append({
            "name": f"zoo/{entry['name']}",
            "architecture": entry.get("architecture", entry["config"]["arch"]),
            "parameters": entry.get("params"),
            "test_accuracy": entry.get("test_accuracy"),
            "dataset": entry.get("dataset"),
            "size_mb": round(entry.get("bytes", 0) / 1e6, 2),
            "seed": entry.get("seed"),
        })
    return rows

