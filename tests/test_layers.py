import pytest
import torch
import torchvision

from core.engine.layers import list_layers, receiver_suffix, resolve_layer, sender_prefix
from core.models.architectures import build_architecture


def _cut_everywhere_matches_forward(module, input_shape, layers):
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(x)
        activations = sender_prefix(module, layers, input_shape)(x)
        for layer, act in zip(layers, activations):
            assert tuple(act.shape[1:]) == layer.shape
            assert torch.equal(receiver_suffix(module, layer, input_shape)(act), expected), layer.name


def test_paper_resnet_layers_are_stem_and_blocks():
    module = build_architecture({"arch": "resnet", "blocks": [1, 2, 1, 2], "width": 16}).eval()
    layers = list_layers(module, (1, 32, 32))
    assert [lay.name for lay in layers] == ["stem", "layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer4.0",
                                           "layer4.1"]
    assert [lay.shape for lay in layers][::3] == [(16, 32, 32), (32, 16, 16), (128, 4, 4)]
    assert all(lay.kind == "map" for lay in layers)
    _cut_everywhere_matches_forward(module, (1, 32, 32), list_layers(module, (1, 32, 32), all_nodes=True))


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("vgg11", 64), ("mobilenet_v2", 64),
                                       ("convnext_tiny", 64), ("vit_b_16", 224)])
def test_cutting_torchvision_architectures_matches_the_full_forward(arch, size):
    module = torchvision.models.get_model(arch).eval()
    layers = list_layers(module, (3, size, size))
    assert len(layers) >= 8
    if arch == "vit_b_16":
        assert layers[1].name == "encoder.layers.encoder_layer_0" and layers[1].kind == "tokens"
    if arch == "resnet18":
        assert [lay.name for lay in layers][:3] == ["maxpool", "layer1.0", "layer1.1"]
    _cut_everywhere_matches_forward(module, (3, size, size), layers)


def test_names_resolve_by_module_or_node_and_errors_point_to_list_layers():
    module = torchvision.models.resnet18().eval()
    shape = (3, 64, 64)
    assert resolve_layer(module, "layer1.0", shape).node == "layer1.0.relu_1"
    # a node that is a block's output goes by the block's name, whichever way it was asked for
    assert resolve_layer(module, "layer1.0.relu_1", shape).name == "layer1.0"
    with pytest.raises(ValueError, match=r"unknown layer 'layer9' .*list_layers"):
        resolve_layer(module, "layer9", shape)
    with pytest.raises(ValueError, match="cannot be cut.*skip connection"):
        resolve_layer(module, "layer1.0.conv1", shape)


def test_plain_module_needs_an_input_shape_and_the_model_is_left_as_found():
    module = build_architecture({"arch": "vgg"})
    module.train()
    with pytest.raises(ValueError, match="input_shape"):
        list_layers(module)
    hooks_before = sum(len(m._forward_hooks) for m in module.modules())
    list_layers(module, (1, 32, 32))
    sender_prefix(module, ["features.3"], (1, 32, 32))
    assert module.training  # mode restored
    assert sum(len(m._forward_hooks) for m in module.modules()) == hooks_before


class _DataDependent(torch.nn.Module):
    """A branch on the data itself: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.conv(x).flatten(1)


def test_untraceable_models_are_refused_with_the_reason():
    from core.engine.layers import UntraceableError

    with pytest.raises(UntraceableError, match="cannot be cut into layers: torch.fx cannot trace it"):
        list_layers(_DataDependent(), (1, 8, 8))
