"""Convolution + bias (+ residual) + ReLU as one library call, for the frozen networks.

After BatchNorm folding (:mod:`core.engine.folding`) a ResNet block is ``relu(conv(x) + b)`` and
``relu(conv(y) + b + shortcut)``. Eagerly that is a convolution and then two or three more
passes over the activation: PyTorch adds the bias (cuDNN does not), then the residual, then the
ReLU, each a separate kernel. Both convolution libraries PyTorch ships can do those in the
convolution's epilogue:

* on CUDA, cuDNN's fused convolution-bias-activation, ``torch.cudnn_convolution_relu`` and
  ``torch.cudnn_convolution_add_relu`` (2.3-2.9x the speed of the eager sequence for 64 channels
  at 32x32, measured on the H100; the eager passes took half the time of scoring a grid there);
* on a CPU, oneDNN's convolution with post-ops, ``torch.ops.mkldnn._convolution_pointwise`` (the
  op ``torch.compile`` emits for the same pattern on CPUs), bit-identical to the eager ops: on
  this project's 2 cores 1.4x (1.8x with a residual) the speed of the eager sequence for 16
  channels at 32x32, 1.0-1.2x at 32-128 channels (``python -m bench.cpu_engine``). oneDNN fuses
  the residual add only in channels_last, which is how the engine runs (see
  :func:`core.engine.fused.engine_network`); in NCHW the op quietly runs the eager sequence.

Why by hand: ``torch.compile`` fuses the same ops but took 5-22 s to compile each receiver
suffix, more than a whole one-epoch grid now takes; the fused ops have no autograd formula, so
:class:`_ConvBiasReLU` supplies the backward for the input (the frozen weights need none).

:func:`fuse_conv_relu` rewrites a traced prefix or suffix (an ``fx.GraphModule``) in place.
"""

from __future__ import annotations

import operator
import weakref

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["FusedConvReLU", "fuse_conv_relu"]

_RELUS = {F.relu, torch.relu, torch.relu_}
_ADDS = {operator.add, operator.iadd, torch.add}


# dtypes oneDNN's fused convolution takes (float64 and others run the eager ops). The op is
# PyTorch-internal (inductor's): a build without it runs the eager ops.
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _fused_op_for(x: torch.Tensor) -> str | None:
    """Which fused convolution serves ``x``: "cudnn", "onednn", or None (eager ops)."""
    if x.is_cuda:
        return "cudnn"
    if _ONEDNN and x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES:
        return "onednn"
    return None


def _conv_bias_relu(x, weight, bias, residual, stride, padding, dilation, groups):
    """relu(conv(x, weight) + bias [+ residual]) in one call of the library serving ``x``."""
    op = _fused_op_for(x)
    if op == "cudnn":
        if residual is None:
            return torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)
        return torch.cudnn_convolution_add_relu(x, weight, residual, 1.0, bias, stride, padding, dilation, groups)
    if op == "onednn":  # note oneDNN's argument order: padding before stride
        pointwise = torch.ops.mkldnn._convolution_pointwise
        if residual is None:
            return pointwise(x, weight, bias, padding, stride, dilation, groups, "relu", [], "")
        return pointwise.binary(x, residual, weight, bias, padding, stride, dilation, groups, "add", None, "relu",
                                [], "")
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y if residual is None else y + residual)


# conv module -> {dtype: (key, weight, bias)}; weak, so a cast copy lives as long as its network
_CASTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _frozen_weights(conv: nn.Conv2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``conv``'s frozen weight and bias in ``dtype``, cast once rather than at every call.

    Under bf16 autocast the copies were made per call (autocast keeps cast copies only of
    weights that require gradients): two of the three operations of a fused convolution's
    forward, 0.5 GB a training step of the width-64 grid (``python -m bench.roofline train
    --bf16``). Kept per conv module, which every prefix and suffix of a network shares; the key
    notices a move (new storage), an in-place change (version) and inference mode (whose tensors
    a later training step could not save for its backward)."""
    weight, bias = conv.weight, conv.bias
    if weight.dtype == dtype and (bias is None or bias.dtype == dtype):
        return weight, bias
    key = (weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version),
           torch.is_inference_mode_enabled())
    casts = _CASTS.setdefault(conv, {})
    if dtype not in casts or casts[dtype][0] != key:
        casts[dtype] = (key, weight.to(dtype), None if bias is None else bias.to(dtype))
    return casts[dtype][1], casts[dtype][2]


class _ConvBiasReLU(torch.autograd.Function):
    """The fused op with a backward for ``x`` and ``residual`` (weight and bias are frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, stride, padding, dilation, groups):
        y = _conv_bias_relu(x, weight, bias, residual, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight, y)
        ctx.conv = (stride, padding, dilation, groups)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        g = torch.ops.aten.threshold_backward(grad, y, 0)  # through the ReLU: zero where y == 0
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(g, x, weight, None, stride, padding, dilation, False,
                                                         [0] * len(stride), groups, [True, False, False])[0]
        grad_residual = g if ctx.needs_input_grad[3] else None
        return grad_x, None, None, grad_residual, None, None, None, None


class FusedConvReLU(nn.Module):
    """``relu(conv(x) [+ residual])`` for a frozen ``nn.Conv2d`` (shares its weights): one cuDNN
    call on CUDA, one oneDNN call on a CPU, the eager ops where neither serves (other dtypes, no
    oneDNN) or where the library refuses this convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.fused = True  # set False the first time the library refuses (layout, alignment, version)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused and _fused_op_for(x) is not None:
            try:
                return self._fused(x, residual)
            except torch.OutOfMemoryError:
                raise  # the grid retries with smaller chunks
            except RuntimeError:
                self.fused = False
        y = self.conv(x)
        return F.relu(y if residual is None else y + residual)

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        conv, device = self.conv, x.device.type
        # Autocast does not reach into custom functions: cast as it would for a convolution.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        weight, bias = _frozen_weights(conv, dtype)
        args = (x.to(dtype), weight, bias, residual.to(dtype) if residual is not None else None,
                list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        if torch.is_grad_enabled() and (x.requires_grad or (residual is not None and residual.requires_grad)):
            return _ConvBiasReLU.apply(*args)
        return _conv_bias_relu(*args)


def _fusable_conv(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op != "call_module":
        return False
    conv = gm.get_submodule(node.target)
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str) \
        and not conv.weight.requires_grad and (conv.bias is None or not conv.bias.requires_grad)


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    return (node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.ReLU) \
        or (node.op == "call_function" and node.target in _RELUS and len(node.args) == 1) \
        or (node.op == "call_method" and node.target in ("relu", "relu_"))


def _is_identity(gm: fx.GraphModule, node: fx.Node) -> bool:  # a folded BatchNorm
    return node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.Identity


def _is_residual_add(node: fx.Node) -> bool:  # a + b of two different tensors
    return node.op == "call_function" and node.target in _ADDS and len(node.args) == 2 and not node.kwargs \
        and all(isinstance(a, fx.Node) for a in node.args) and node.args[0] is not node.args[1]


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_conv_relu(gm: fx.GraphModule) -> int:
    """Replace every ``conv -> [Identity] -> [+ residual] -> ReLU`` chain in ``gm`` whose inner
    results nothing else uses (so no cut point sits inside) with a :class:`FusedConvReLU`;
    returns how many were replaced."""
    graph, fused = gm.graph, 0
    for conv_node in list(graph.nodes):
        if not _fusable_conv(gm, conv_node):
            continue
        chain, end = [conv_node], conv_node
        while (user := _only_user(end)) is not None and _is_identity(gm, user):
            chain.append(user)
            end = user
        user = _only_user(end)
        residual = None
        if user is not None and _is_residual_add(user):
            residual = user.args[1] if user.args[0] is end else user.args[0]
            chain.append(user)
            user = _only_user(user)
        if user is None or not _is_relu(gm, user):
            continue
        name = f"fused_conv_relu_{fused}"
        gm.add_submodule(name, FusedConvReLU(gm.get_submodule(conv_node.target)))
        with graph.inserting_before(user):
            new = graph.call_module(name, (conv_node.args[0],) + ((residual,) if residual is not None else ()))
        user.replace_all_uses_with(new)
        for node in [user, *reversed(chain)]:
            graph.erase_node(node)
        fused += 1
    if fused:
        graph.lint()
        gm.recompile()
    return fused
