import itertools

import pytest
import torch

from core.models.architectures import SmallResNet, build_architecture


@pytest.mark.parametrize("blocks", list(itertools.product((1, 2), repeat=4)))
def test_every_paper_block_config_builds_and_classifies(blocks):
    net = SmallResNet(blocks, width=8, in_channels=1).eval()
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert sum(len(getattr(net, f"layer{s + 1}")) for s in range(4)) == sum(blocks)


def test_width_and_three_channel_input():
    net = build_architecture({"arch": "resnet", "blocks": [2, 2, 2, 2], "width": 64, "in_channels": 3}).eval()
    # width 64 with blocks 2222 is the CIFAR ResNet-18 (about 11.2 M parameters)
    assert 11_000_000 < sum(p.numel() for p in net.parameters()) < 11_300_000
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_bad_configs_say_what_is_wrong():
    with pytest.raises(ValueError, match="four positive integers"):
        SmallResNet((1, 1, 1))
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_architecture({"arch": "nope"})
    with pytest.raises(ValueError, match="'arch' key"):
        build_architecture({"blocks": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match="unknown torchvision architecture"):
        build_architecture({"arch": "torchvision", "name": "resnet9000"})


def test_torchvision_adapted_to_small_grey_images():
    net = build_architecture({"arch": "torchvision", "name": "mobilenet_v2", "num_classes": 10, "in_channels": 1,
                              "small_input": True, "kwargs": {"width_mult": 0.5}}).eval()
    assert net.features[0][0].in_channels == 1 and net.features[0][0].stride == (1, 1)
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
