import pytest
import torch
import torch.nn.functional as F

from core.engine.layers import list_layers, receiver_suffix, sender_prefix
from core.engine.lstsq import NormalEquations
from core.engine.stitches import NotStitchable, StitchedNetwork, make_stitch, stitch, stitch_kind
from core.models.network import cached_model


@pytest.mark.parametrize("name", ["zoo/resnet_2222-s0", "zoo/vgg_small-s0", "zoo/mobilenet_v2-s0"])
def test_identity_stitch_reproduces_the_network_exactly_at_every_layer(name):
    net = cached_model(name, "cpu")
    x = net.prepare(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        expected = net.module(x)
        for layer in list_layers(net):
            identity = make_stitch(layer.shape, layer.shape).identity_().eval()
            stitched = StitchedNetwork(sender_prefix(net, [layer]), identity, receiver_suffix(net, layer))
            assert torch.equal(stitched(x), expected), layer.name


@pytest.mark.parametrize("sender,receiver,kind", [
    ((16, 32, 32), (32, 32, 32), "conv1x1"),
    ((16, 32, 32), (32, 8, 8), "conv_kxk"),
    ((16, 7, 7), (32, 4, 4), "conv1x1"),  # non-integer shrink: adaptive average pooling
    ((16, 4, 4), (32, 16, 16), "conv1x1"),  # grow by 4
    ((16, 4, 4), (32, 7, 7), "conv1x1"),  # non-integer grow: nearest
    ((64, 4, 4), (10,), "linear"),
    ((10,), (8, 4, 4), "linear"),
    ((197, 768), (197, 384), "tokens"),
    ((64, 14, 14), (197, 768), "tokens"),
    ((197, 96), (64, 14, 14), "tokens_to_map"),
])
def test_every_shape_pair_gets_a_stitch_of_the_right_output_shape(sender, receiver, kind):
    assert stitch_kind(sender, receiver) == kind
    s = make_stitch(sender, receiver, bn_before=True, bn_after=True, seed=0)
    assert s(torch.randn(3, *sender)).shape == (3, *receiver)


def test_conv_kxk_uses_stride_k_and_grow_equals_upsample_then_conv():
    s = make_stitch((16, 32, 32), (8, 4, 4), seed=0)
    assert s.linear.kernel_size == (8, 8) and s.linear.stride == (8, 8)
    x = torch.randn(2, 16, 32, 32)  # on CUDA computed as a product of patches: the same as the convolution
    product = s._patch_product(x)
    assert torch.allclose(product, s.linear(x), atol=1e-5) and product.is_contiguous(memory_format=torch.channels_last)
    grow = make_stitch((16, 4, 4), (8, 16, 16), seed=0)
    x = torch.randn(2, 16, 4, 4)
    reference = grow.linear(F.interpolate(x, size=(16, 16), mode="nearest"))
    assert torch.allclose(grow(x), reference, atol=1e-6)


def test_the_engine_option_patch_product_reaches_every_stitch():
    # bench.grid_train's conv_stitches variant compares the two ways on a GPU
    from core.engine.fused import Cell, FusedStitches
    from core.engine.layers import list_layers
    from core.models.network import cached_model

    net = cached_model("zoo/resnet_1111-s0", "cpu")
    first, last = list_layers(net)[0], list_layers(net)[-2]
    for option in (True, False):
        cells = [Cell(net, net, first, last, make_stitch(first.shape, last.shape, seed=0))]
        FusedStitches(cells, torch.device("cpu"), patch_product=option)
        assert cells[0].stitch.kind == "conv_kxk" and cells[0].stitch.patch_product is option


@pytest.mark.parametrize("sender,receiver", [((16, 4, 4), (8, 16, 16)), ((16, 4, 4), (8, 7, 7)),
                                             ((16, 32, 32), (8, 4, 4)), ((16, 8, 8), (8, 8, 8))])
def test_channels_last_in_gives_channels_last_out(sender, receiver):
    # A grid concatenates every stitch into one receiver layer; one NCHW output among them
    # makes the whole batch NCHW (half the convolution speed on a CPU).
    s = make_stitch(sender, receiver, seed=0).to(memory_format=torch.channels_last)
    x = torch.randn(3, *sender)
    out = s(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, s(x), atol=1e-6)


def test_rows_view_agrees_with_forward():
    """design_rows -> linear part -> rows equals the forward pass (what least squares fits)."""
    for sender, receiver in [((16, 32, 32), (8, 8, 8)), ((16, 4, 4), (8, 16, 16)), ((16, 8, 8), (8, 8, 8)),
                             ((8, 4, 4), (10,)), ((49, 16), (49, 8)), ((16, 7, 7), (8, 4, 4))]:
        s = make_stitch(sender, receiver, seed=1)
        x = torch.randn(5, *sender)
        rows = s.design_rows(x)
        predicted = rows @ s.row_weight().T + s.linear.bias
        # For a growing map the rows live at the sender's resolution: compare block averages.
        assert torch.allclose(predicted, s.target_rows(s(x)), atol=1e-5), (sender, receiver)


def test_least_squares_on_the_rows_recovers_a_conv_kxk_stitch():
    # The patches' column order (row, column, channel) and the weight's (channel, row, column)
    # differ; row_weight and set_linear translate, so a fit recovers the weight itself.
    teacher, student = make_stitch((16, 32, 32), (8, 8, 8), seed=1), make_stitch((16, 32, 32), (8, 8, 8), seed=2)
    assert teacher.kind == "conv_kxk"
    x = torch.randn(20, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = teacher(x)
    system = NormalEquations(student.row_weight().shape[1], 8, "cpu")
    rows = student.design_rows(x).double()
    system.add_gram(rows)
    system.add_cross(rows, student.target_rows(y).double())
    student.set_linear(*system.solve())
    assert torch.allclose(student.linear.weight, teacher.linear.weight, atol=1e-4)
    assert torch.allclose(student.linear.bias, teacher.linear.bias, atol=1e-4)


def test_set_linear_takes_the_row_weight_back_for_every_kind():
    for sender, receiver in [((16, 32, 32), (8, 8, 8)), ((16, 4, 4), (8, 16, 16)), ((8, 4, 4), (10,)),
                             ((49, 16), (49, 8))]:
        s = make_stitch(sender, receiver, seed=1)
        before = s.linear.weight.detach().clone()
        s.set_linear(s.row_weight().detach().clone() * 2, s.linear.bias.detach())
        assert torch.equal(s.linear.weight, 2 * before), (sender, receiver, s.kind)


def test_oversized_stitches_are_not_stitchable():
    with pytest.raises(NotStitchable, match="parameters, over the limit"):
        make_stitch((768,), (64, 56, 56))
    with pytest.raises(NotStitchable, match="only"):
        make_stitch((3, 4, 5, 6), (10,))


def test_stitch_between_two_zoo_networks(r1111_pair):
    a, b = r1111_pair
    net = stitch(a, b, "layer2.0", "layer3.0", seed=0)
    assert net.stitch.kind == "conv_kxk"
    assert net(a.prepare(torch.rand(2, 1, 32, 32))).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown layer 'layer7'"):
        stitch(a, b, "layer7", "stem")
