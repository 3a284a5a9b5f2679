"""Model definitions that StitchLab builds from a config dict.

Every architecture here is a plain ``nn.Module`` that torch.fx can trace, and every one
is described by a JSON-able config (``{"arch": "resnet", "blocks": [1, 1, 1, 1], ...}``)
so a checkpoint can carry its own architecture in its metadata.

* ``resnet``: the seed paper's small ResNet family (Hernandez et al. 2023): a 3x3 stem,
  four stages of BasicBlocks with ``blocks`` per stage in {1, 2}^4, global pooling and a
  linear head. ``blocks=[2, 2, 2, 2]`` at ``width=64`` is the CIFAR ResNet-18.
* ``vgg``: a plain VGG-style CNN (conv-BN-ReLU units, max pooling between stages).
* ``torchvision``: any torchvision classification architecture, optionally adapted to
  small inputs (``small_input=True`` replaces the stem so 32x32 images keep resolution).
"""

from __future__ import annotations

import json
import math
import re

import torch
import torchvision
from torch import nn

__all__ = ["build_architecture", "check_config", "state_shapes", "input_channels", "classes_of", "classes_in_state",
           "with_class_count",
           "SmallResNet", "VGGStyle", "ARCHITECTURES", "MAX_STATE_NUMBERS"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016), as in the seed paper."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            # 1x1 projection shortcut (option B of the ResNet paper).
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """The seed paper's ResNet family.

    Args:
        blocks: BasicBlocks per stage, four entries, each 1 or 2 in the paper (any >= 1 works).
        width: channels of the first stage; stages use width, 2w, 4w, 8w.
        in_channels: 1 for Fashion-MNIST, 3 for CIFAR-10.
        num_classes: size of the linear head.

    Layers (as ``list_layers`` names them): ``stem``, then ``layer{s}.{b}`` for every block.
    On a 32x32 input the stages run at 32, 16, 8 and 4 pixels.
    """

    def __init__(self, blocks=(1, 1, 1, 1), width: int = 16, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be four positive integers such as [1, 1, 2, 2], got {list(blocks)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=False),
        )
        channels = width
        for stage, n_blocks in enumerate(blocks):
            out_channels = width * 2**stage
            stride = 1 if stage == 0 else 2
            layers = []
            for b in range(int(n_blocks)):
                layers.append(BasicBlock(channels, out_channels, stride if b == 0 else 1))
                channels = out_channels
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class ConvUnit(nn.Sequential):
    """conv3x3-BN-ReLU, one 'layer' of the VGG-style network."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
        )


class VGGStyle(nn.Module):
    """A plain CNN without skip connections: stages of conv units separated by 2x2 max pooling.

    ``stages=[[32, 32], [64, 64], [128, 128]]`` gives six conv units at 32, 16 and 8 pixels
    (on a 32x32 input) followed by global average pooling and a linear head.
    Layers are named ``features.{k}`` (a conv unit or a pooling step).
    """

    def __init__(self, stages=((32, 32), (64, 64), (128, 128)), in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for s, stage in enumerate(stages):
            if s > 0:
                layers.append(nn.MaxPool2d(2))
            for out_channels in stage:
                layers.append(ConvUnit(channels, int(out_channels)))
                channels = int(out_channels)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _torchvision_model(name: str, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, **kwargs):
    """A torchvision classification architecture with random weights.

    ``small_input`` adapts the stem to 32x32 images: a stride-1 first convolution (and, for
    ResNets, no max pooling), so the network keeps enough resolution for its later stages.
    ``in_channels`` != 3 replaces the first convolution with one of the right input width.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"unknown torchvision architecture {name!r}: choose one of torchvision.models.list_models(), "
            f"e.g. {', '.join(available[:5])}, ..."
        )
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except NotImplementedError:  # laid out on the meta device: see _lay_out
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError) as exc:
        if not kwargs:
            raise
        # torchvision's reason names its own functions ("_vision_transformer() got multiple values ...").
        bad = re.search(r"(?:unexpected keyword argument|multiple values for keyword argument) '(\w+)'", str(exc))
        key = f"kwargs.{bad.group(1)}" if bad else "kwargs"
        raise ValueError(f"config key '{key}' is not a setting torchvision's {name} accepts with these values "
                         f"({_shown(kwargs)})") from None
    if in_channels != 3 or small_input:
        parent, attr, conv = _first_conv(model)
        stride = 1 if small_input else conv.stride
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride, conv.padding,
                        bias=conv.bias is not None)
        setattr(parent, attr, new)
        if small_input and hasattr(model, "maxpool"):
            model.maxpool = nn.Identity()
    return model


def _first_conv(model: nn.Module):
    """(parent module, attribute name, conv) of the first Conv2d, in definition order."""
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = qualname.rpartition(".")
            return model.get_submodule(parent_name), attr, module
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to other input channels")


ARCHITECTURES = {
    "resnet": lambda cfg: SmallResNet(cfg.get("blocks", (1, 1, 1, 1)), cfg.get("width", 16),
                                      input_channels(cfg), classes_of(cfg)),
    "vgg": lambda cfg: VGGStyle(cfg.get("stages", ((32, 32), (64, 64), (128, 128))),
                                input_channels(cfg), classes_of(cfg)),
    "torchvision": lambda cfg: _torchvision_model(
        cfg["name"], classes_of(cfg), input_channels(cfg), cfg.get("small_input", False),
        **cfg.get("kwargs", {})),
}

# A network is built only if its parameters and buffers hold at most this many numbers (4 GB in
# float32): above torchvision's largest classifiers (vit_h_14, regnet_y_128gf: about 650 million),
# far below what a forged config can ask for (width 100000 is 90 billion in one convolution).
MAX_STATE_NUMBERS = 1_000_000_000

# What each key of a config may hold. The bounds are far above any network StitchLab compares
# (the paper's ResNets have 1 or 2 blocks per stage at width 64) and low enough that even laying
# out a network's shapes (on the meta device, which allocates nothing) stays instant.
_MAX_CHANNELS = 4096
_MAX_BLOCKS = 64
_MAX_STAGES = 16
_MAX_IN_CHANNELS = 256
_MAX_CLASSES = 100_000
_MAX_KWARG = 100_000  # a torchvision keyword's number (width_mult, dropout, stem_width, ...)
_KEYS = {
    "resnet": ("arch", "blocks", "width", "in_channels", "num_classes"),
    "vgg": ("arch", "stages", "in_channels", "num_classes"),
    "torchvision": ("arch", "name", "num_classes", "in_channels", "small_input", "kwargs"),
}
_DEFAULT_IN_CHANNELS = {"resnet": 1, "vgg": 1, "torchvision": 3}
# The zoo's own architectures default to Fashion-MNIST's classes, torchvision's to ImageNet's (its own default).
_DEFAULT_CLASSES = {"resnet": 10, "vgg": 10, "torchvision": 1000}


def _shown(value) -> str:
    """A value as JSON, cut short: what the message shows of what it got."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=lambda v: type(v).__name__)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_whole(config: dict, key: str, high: int) -> None:
    if key in config and not _whole(config[key], 1, high):
        raise ValueError(f"config key '{key}' must be a whole number from 1 to {high:,}, got {_shown(config[key])}")


def _check_kwargs(kwargs) -> None:
    if not isinstance(kwargs, dict):
        raise ValueError(f"config key 'kwargs' must be an object of torchvision keyword arguments such as "
                         f'{{"width_mult": 0.5}}, got {_shown(kwargs)}')
    for key, value in kwargs.items():
        if key in ("weights", "num_classes", "progress"):
            raise ValueError(f"config key 'kwargs.{key}' cannot be set: StitchLab sets it"
                             + (" (use the config's own 'num_classes')" if key == "num_classes" else ""))
        for item in value if isinstance(value, list) and len(value) <= 16 else [value]:
            number = isinstance(item, (int, float)) and not isinstance(item, bool)
            if not (item is None or isinstance(item, (bool, str)) or number) or (
                    number and not (math.isfinite(item) and abs(item) <= _MAX_KWARG)):
                raise ValueError(f"config key 'kwargs.{key}' must be a finite number up to {_MAX_KWARG:,}, a word, "
                                 f"true/false or a short list of those, got {_shown(value)}")


def check_config(config: dict) -> dict:
    """Return ``config`` if every key is one its architecture takes, with a value of the right type
    and size; else raise ``ValueError`` naming the first key that is not and what it should hold.

    Nothing is built: this is what a checkpoint's metadata is held to before any memory is spent.
    """
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(f"an architecture config is an object with an 'arch' key such as "
                         f'{{"arch": "resnet", "blocks": [1, 1, 1, 1]}}, got {_shown(config)}')
    arch = config["arch"]
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {_shown(arch)}: choose one of {sorted(ARCHITECTURES)}")
    unknown = [key for key in config if key not in _KEYS[arch]]
    if unknown:
        raise ValueError(f"config key '{unknown[0]}' is not a {arch} setting; the settings are "
                         f"{', '.join(_KEYS[arch])}")
    _check_whole(config, "in_channels", _MAX_IN_CHANNELS)
    _check_whole(config, "num_classes", _MAX_CLASSES)
    if arch == "resnet":
        _check_whole(config, "width", _MAX_CHANNELS)
        blocks = config.get("blocks", [1, 1, 1, 1])
        if not isinstance(blocks, (list, tuple)) or len(blocks) != 4 or not all(_whole(b, 1, _MAX_BLOCKS)
                                                                                for b in blocks):
            raise ValueError(f"config key 'blocks' must be four whole numbers from 1 to {_MAX_BLOCKS} such as "
                             f"[1, 1, 2, 2], got {_shown(blocks)}")
    elif arch == "vgg":
        stages = config.get("stages", [[32]])
        if not isinstance(stages, (list, tuple)) or not 1 <= len(stages) <= _MAX_STAGES or not all(
                isinstance(stage, (list, tuple)) and 1 <= len(stage) <= _MAX_BLOCKS
                and all(_whole(c, 1, _MAX_CHANNELS) for c in stage) for stage in stages):
            raise ValueError(f"config key 'stages' must be 1 to {_MAX_STAGES} lists of channel counts (whole numbers "
                             f"from 1 to {_MAX_CHANNELS}) such as [[32, 32], [64, 64]], got {_shown(stages)}")
    else:
        if not isinstance(config.get("name"), str):
            raise ValueError(f"config key 'name' must name a torchvision architecture such as 'resnet18', got "
                             f"{_shown(config.get('name'))}")
        if "small_input" in config and not isinstance(config["small_input"], bool):
            raise ValueError(f"config key 'small_input' must be true or false, got {_shown(config['small_input'])}")
        _check_kwargs(config.get("kwargs", {}))
    return config


def input_channels(config: dict) -> int:
    """The channels the network built from ``config`` takes (its architecture's default if unsaid)."""
    return config.get("in_channels", _DEFAULT_IN_CHANNELS.get(config.get("arch"), 3))


def classes_of(config: dict) -> int:
    """The classes the network built from ``config`` predicts (its architecture's default if unsaid)."""
    return config.get("num_classes", _DEFAULT_CLASSES.get(config.get("arch"), 1000))


def classes_in_state(config: dict, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """How many classes a state dict of these tensor ``shapes`` predicts, for ``config``'s architecture:
    the size of the head's dimension that ``num_classes`` sets, found by laying the network out (no
    memory) with one class and with two and reading the dimension that differs. None where the head
    tensors are missing, disagree or hold no allowed count, or the network cannot be laid out."""
    try:
        layouts = [state_shapes({**config, "num_classes": n}) for n in (1, 2)]
    except ValueError:  # a config that cannot be built is refused, in its words, by whoever builds it
        return None
    if None in layouts:
        return None
    (_, one), (_, two) = layouts
    counts = set()
    for key, shape in one.items():
        if shape == two[key]:
            continue
        dim = next(i for i, (a, b) in enumerate(zip(shape, two[key])) if a != b)
        found = shapes.get(key)
        counts.add(found[dim] if found is not None and len(found) == len(shape) else None)
    count = counts.pop() if len(counts) == 1 else None
    return count if count is not None and _whole(count, 1, _MAX_CLASSES) else None


def with_class_count(config: dict, state: dict[str, torch.Tensor]) -> dict:
    """A torchvision config that leaves ``num_classes`` unsaid, with the count its ``state`` dict's
    head holds (a resnet18 fine-tuned to 10 classes and saved without it loads as
    one), else torchvision's default. Said explicitly, so a random copy builds the same head. The
    zoo's own architectures keep their default of 10."""
    if config.get("arch") != "torchvision" or "num_classes" in config:
        return config
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    return {**config, "num_classes": classes_in_state(config, shapes) or classes_of(config)}


def _lay_out(config: dict) -> nn.Module | None:
    """The network ``config`` builds, on the meta device (shapes, no memory); None for the few
    torchvision models that compute with tensors while being built (the RegNets), whose size
    their name fixes (their JSON keywords only reach the stem)."""
    try:
        with torch.device("meta"):
            return ARCHITECTURES[config["arch"]](config)
    except NotImplementedError:  # "Cannot copy out of meta tensor": a tensor's value was needed
        return None


def state_shapes(config: dict) -> tuple[str, dict[str, tuple[int, ...]]] | None:
    """``(class name, {state dict key: shape})`` of the network ``config`` builds, found without
    allocating its weights; None where that cannot be known without building it (see ``_lay_out``).
    Raises ``ValueError`` naming a bad key (:func:`check_config`)."""
    module = _lay_out(check_config(config))
    if module is None:
        return None
    return type(module).__name__, {key: tuple(value.shape) for key, value in module.state_dict().items()}


def build_architecture(config: dict) -> nn.Module:
    """Build a randomly initialised model from a config such as
    ``{"arch": "resnet", "blocks": [1, 1, 2, 2], "width": 16, "in_channels": 1}``.

    The config is checked first (:func:`check_config`) and its size measured without allocating
    anything: one holding over :data:`MAX_STATE_NUMBERS` numbers is refused with ``ValueError``."""
    laid_out = state_shapes(config)
    if laid_out is not None:
        numbers = sum(math.prod(shape) for shape in laid_out[1].values())
        if numbers > MAX_STATE_NUMBERS:
            size = f"{numbers * 4 / 2**30:,.0f} GB" if numbers * 4 >= 2**30 else f"{numbers * 4 / 2**20:,.0f} MB"
            raise ValueError(f"this config builds a network of {numbers:,} numbers ({size} in float32), over the "
                             f"limit of {MAX_STATE_NUMBERS:,}: make it smaller (width, blocks, stages, num_classes "
                             f"or kwargs)")
    return ARCHITECTURES[config["arch"]](config)
