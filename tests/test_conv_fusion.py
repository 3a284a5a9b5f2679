"""The conv + bias (+ residual) + ReLU rewrite: same outputs and input gradients as the eager graph.

On the CPU the fused module runs oneDNN's fused convolution (where PyTorch was built with
oneDNN, as the pinned wheels are), so these tests check the graph rewrite, the oneDNN call and
the hand-written backward; the benchmarks check cuDNN's on CUDA."""

import pytest
import torch
from torch import nn

from core.engine.conv_fusion import (
    _ONEDNN,
    FusedConvReLU,
    _conv_bias_relu,
    _ConvBiasReLU,
    _fused_op_for,
    fuse_conv_relu,
)
from core.engine.folding import folded
from core.engine.layers import list_layers, receiver_suffix, sender_prefix
from core.models.network import cached_model


def _count(gm):
    return sum(isinstance(m, FusedConvReLU) for m in gm.modules())


@pytest.fixture(scope="module")
def net():
    return folded(cached_model("zoo/resnet_2222-s0", "cpu"), channels_last=True)


def test_every_block_of_a_folded_resnet_is_fused_and_the_suffix_is_unchanged(net):
    layers = list_layers(net)
    x = net.prepare(torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        acts = sender_prefix(net, layers)(x)
    for k, layer in enumerate(layers[:-1]):
        suffix = receiver_suffix(net, layer)
        fused = receiver_suffix(net, layer)
        blocks = len(layers) - 1 - k
        assert fuse_conv_relu(fused) == 2 * blocks == _count(fused)  # conv1 + ReLU, conv2 + shortcut + ReLU
        z = acts[k].detach().clone().requires_grad_()
        z_fused = acts[k].detach().clone().requires_grad_()
        out, out_fused = suffix(z), fused(z_fused)
        assert torch.allclose(out_fused, out, atol=1e-5, rtol=1e-5), layer.name
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        (out_fused * weights).sum().backward()
        assert torch.allclose(z_fused.grad, z.grad, atol=1e-5, rtol=1e-4), layer.name
        if _ONEDNN:  # oneDNN ran every fused module, none fell back
            assert all(m.fused for m in fused.modules() if isinstance(m, FusedConvReLU)), layer.name


def test_a_prefix_keeps_every_requested_activation(net):
    wanted = ["stem.2", "layer1.0.add", "layer2.0.relu_1", "layer3.1.add"]
    x = net.prepare(torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    prefix, fused = sender_prefix(net, wanted), sender_prefix(net, wanted)
    # stem; layer1.0's first conv only (its sum is asked for); layer1.1 to layer3.0 whole;
    # layer3.1's first conv only
    assert fuse_conv_relu(fused.extractor) == 1 + 1 + 2 * 4 + 1
    with torch.no_grad():
        for name, a, b in zip(wanted, prefix(x), fused(x)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name


def test_the_backward_matches_autograd_with_and_without_a_residual():
    generator = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1).requires_grad_(False)
    x = torch.randn(3, 4, 9, 9, generator=generator, requires_grad=True)
    for residual in (None, torch.randn(3, 6, 5, 5, generator=generator, requires_grad=True)):
        args = (conv.weight, conv.bias, residual, list(conv.stride), list(conv.padding), list(conv.dilation), 1)
        y = _ConvBiasReLU.apply(x, *args)
        expected = torch.relu(conv(x) + (residual if residual is not None else 0))
        assert torch.allclose(y, expected, atol=1e-6)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x] + ([residual] if residual is not None else []), g)
        want = torch.autograd.grad(expected, [x] + ([residual] if residual is not None else []), g)
        for got, ref in zip(grads, want):
            assert torch.allclose(got, ref, atol=1e-6)


def test_trainable_or_unusual_convolutions_are_left_alone():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding=1)  # trainable
            self.b = nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect").requires_grad_(False)

        def forward(self, x):
            return torch.relu(self.b(torch.relu(self.a(x))))

    gm = torch.fx.symbolic_trace(Block())
    assert fuse_conv_relu(gm) == 0


@pytest.mark.skipif(not _ONEDNN, reason="PyTorch built without oneDNN's fused convolution")
def test_onednn_fuses_bias_residual_and_relu_like_the_eager_ops():
    generator = torch.Generator().manual_seed(3)
    channels_last = torch.channels_last
    for stride, kernel, padding in ((1, 3, 1), (2, 3, 1), (2, 1, 0)):
        conv = nn.Conv2d(8, 12, kernel, stride=stride, padding=padding).requires_grad_(False)
        x = torch.randn(4, 8, 10, 10, generator=generator).contiguous(memory_format=channels_last)
        out_size = (10 + 2 * padding - kernel) // stride + 1
        residual = torch.randn(4, 12, out_size, out_size, generator=generator).contiguous(memory_format=channels_last)
        assert _fused_op_for(x) == "onednn"
        for r in (None, residual):
            got = _conv_bias_relu(x, conv.weight, conv.bias, r, list(conv.stride), list(conv.padding),
                                  list(conv.dilation), 1)
            want = torch.relu(conv(x) + (r if r is not None else 0))
            assert torch.allclose(got, want, atol=1e-6), (stride, kernel, r is None)
            assert got.is_contiguous(memory_format=channels_last)  # the layout the engine runs in


def test_dtypes_the_fused_op_cannot_take_run_the_eager_ops_without_disabling_it():
    module = FusedConvReLU(nn.Conv2d(3, 5, 3, padding=1).double().requires_grad_(False))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert _fused_op_for(x) is None
    assert torch.equal(module(x), torch.relu(module.conv(x)))
    assert module.fused  # float32 inputs later still get the fused op


def test_the_engine_runs_a_one_channel_network_channels_last_with_the_same_activations():
    # oneDNN fuses a residual add into a convolution only in channels_last (in NCHW it silently
    # runs the eager ops); a 1-channel input carries no layout, so the engine's NHWC weights decide it.
    from core.engine.fused import engine_prefix

    original = cached_model("zoo/resnet_2222-s0", "cpu")
    layers = list_layers(original)
    x = original.prepare(torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        want, got = sender_prefix(original, layers)(x), engine_prefix(original, layers)(x)
    for layer, a, b in zip(layers, want, got):
        assert torch.allclose(b, a, atol=1e-4, rtol=1e-4), layer.name
        if b.dim() == 4:
            assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous(), layer.name


class _CountCasts(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.casts += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not _ONEDNN, reason="oneDNN's fused convolution is not in this PyTorch build")
def test_under_bf16_autocast_frozen_weights_are_cast_once_and_again_after_a_change():
    conv = nn.Conv2d(4, 6, 3, padding=1).requires_grad_(False).to(memory_format=torch.channels_last)
    module = FusedConvReLU(conv)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(6)).bfloat16()
    x = x.contiguous(memory_format=torch.channels_last)

    def both():
        with torch.autocast("cpu", dtype=torch.bfloat16), _CountCasts() as counter:
            got = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = torch.relu(conv(x))  # autocast casts the weight at every call
        return got, want, counter.casts

    got, want, casts = both()
    assert casts == 2 and got.dtype == torch.bfloat16 and torch.allclose(got.float(), want.float(), atol=0.05)
    got, want, casts = both()
    assert casts == 0 and torch.allclose(got.float(), want.float(), atol=0.05)
    with torch.no_grad():
        conv.weight.mul_(-1)  # an in-place change is noticed
    got_changed, want_changed, casts = both()
    assert casts == 2 and torch.allclose(got_changed.float(), want_changed.float(), atol=0.05)
    assert not torch.allclose(got_changed.float(), got.float(), atol=0.05)


@pytest.mark.skipif(not _ONEDNN, reason="oneDNN's fused convolution is not in this PyTorch build")
def test_a_cast_made_in_inference_mode_keeps_a_later_backward_fused():
    conv = nn.Conv2d(4, 6, 3, padding=1).requires_grad_(False).to(memory_format=torch.channels_last)
    module = FusedConvReLU(conv)
    x = torch.randn(2, 4, 5, 5).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)
    z = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(z)
    # saving an inference tensor for backward raises, and the module would fall back to eager ops
    assert module.fused and "ConvBiasReLU" in type(y.grad_fn).__name__
    y.float().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
