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

import torch
import torchvision
from torch import nn

__all__ = ["build_architecture", "SmallResNet", "VGGStyle", "ARCHITECTURES"]


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
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
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
                                      cfg.get("in_channels", 1), cfg.get("num_classes", 10)),
    "vgg": lambda cfg: VGGStyle(cfg.get("stages", ((32, 32), (64, 64), (128, 128))),
                                cfg.get("in_channels", 1), cfg.get("num_classes", 10)),
    "torchvision": lambda cfg: _torchvision_model(
        cfg["name"], cfg.get("num_classes", 1000), cfg.get("in_channels", 3), cfg.get("small_input", False),
        **cfg.get("kwargs", {})),
}


def build_architecture(config: dict) -> nn.Module:
    """Build a randomly initialised model from a config such as
    ``{"arch": "resnet", "blocks": [1, 1, 2, 2], "width": 16, "in_channels": 1}``."""
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(f"an architecture config is a dict with an 'arch' key, got {config!r}")
    arch = config["arch"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](config)
