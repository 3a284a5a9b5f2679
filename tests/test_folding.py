import pytest
import torch
import torchvision
from torch import nn

from core.engine.folding import fold_batchnorm, folded
from core.engine.layers import list_layers, receiver_suffix, sender_prefix
from core.models.architectures import build_architecture
from core.models.network import cached_model


def _randomised_batchnorm(module: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a wrong fold shows (fresh ones are the identity)."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
    return module.eval()


def _batchnorms(module):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("mobilenet_v2", 64)])
def test_folding_keeps_outputs_and_every_layer_name(arch, size):
    module = _randomised_batchnorm(torchvision.models.get_model(arch, num_classes=10))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clone, convs = fold_batchnorm(module, (3, size, size))
    assert _batchnorms(clone) == 0 < _batchnorms(module) == len(convs)
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    # Every cut point of the original, BatchNorm outputs included, exists on the copy and holds
    # the same activation, except the outputs of folded convolutions (they now include the
    # BatchNorm).
    layers = [lay for lay in list_layers(module, (3, size, size), all_nodes=True) if lay.node not in convs]
    assert arch != "resnet18" or "bn1" in [lay.node for lay in layers]
    with torch.no_grad():
        assert torch.allclose(clone(x), module(x), atol=1e-4, rtol=1e-4)
        acts = sender_prefix(clone, layers, (3, size, size))(x)
        for layer, act, ref in zip(layers, acts, sender_prefix(module, layers, (3, size, size))(x)):
            assert torch.allclose(act, ref, atol=1e-4, rtol=1e-4), layer.name
        for k in range(0, len(layers), 7):
            assert torch.allclose(receiver_suffix(clone, layers[k], (3, size, size))(acts[k]), module(x),
                                  atol=1e-4, rtol=1e-4), layers[k].name
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # the original is untouched


def test_a_cut_at_a_folded_convolution_uses_the_original_network():
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    at_conv = next(lay for lay in list_layers(net, all_nodes=True) if lay.node == "stem.0")
    at_block = list_layers(net)[1]
    assert folded(net, [at_block]) is not net and folded(net, [at_block, at_conv]) is net


def test_a_batchnorm_whose_conv_output_is_used_twice_is_not_folded():
    class TwoUses(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    module = _randomised_batchnorm(TwoUses())
    clone, convs = fold_batchnorm(module, (3, 8, 8))
    assert clone is module and not convs  # nothing to fold: no copy
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(clone(x), module(x))


def test_a_network_without_batchnorm_is_not_copied():
    from dataclasses import replace

    net = cached_model("zoo/resnet_1111-s0", "cpu")
    plain = replace(net, module=nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)))
    plain.module(torch.zeros(1, 1, 32, 32))  # materialise the lazy layer
    assert folded(plain) is plain


def test_folded_networks_are_made_once():
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    assert folded(net) is folded(net) and folded(net).module is not net.module
    assert folded(net).name == net.name and _batchnorms(folded(net).module) == 0
    paper = build_architecture({"arch": "resnet", "blocks": [1, 1, 1, 1], "width": 8})
    assert _batchnorms(fold_batchnorm(paper.eval(), (1, 32, 32))[0]) == 0


def test_the_channels_last_copy_keeps_a_one_channel_network_in_channels_last():
    # A 1-channel input carries no layout, so with NCHW weights a Fashion-MNIST network ran NCHW
    # throughout (and every stitch copied its input); the engine's copy has NHWC weights.
    net = cached_model("zoo/resnet_1111-s0", "cpu")
    copy = folded(net, channels_last=True)
    assert copy is not folded(net) and copy is folded(net, channels_last=True)  # cached per layout
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in copy.module.parameters() if p.dim() == 4)
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in net.module.parameters())  # the original keeps its layout
    layers = list_layers(net)
    x = net.prepare(torch.rand(3, 1, 28, 28))
    with torch.no_grad():
        acts = sender_prefix(copy, layers)(x)
        plain = sender_prefix(net, layers)(x)
    for layer, act, ref in zip(layers, acts, plain):
        assert act.is_contiguous(memory_format=torch.channels_last) and not act.is_contiguous(), layer.name
        assert torch.allclose(act, ref, atol=1e-4, rtol=1e-4), layer.name
