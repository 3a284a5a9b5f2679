"""Frozen networks with each BatchNorm folded into the convolution before it, made once per network.

A frozen (eval-mode) BatchNorm is an affine map per channel, so it can be folded into the
convolution that feeds it: one pass over memory instead of two per block, exact up to float
rounding. Grids run the frozen networks' prefixes and suffixes for every batch, so this pays.

Why not torch.fx's ``fuse``: it rewrites one traced graph, so it had to run on every prefix
and suffix a grid builds, for every chunk (a deep copy and a trace each time: 1.4 s per chunk for
a ResNet-50 on a CPU). Here the whole network is folded once per process (weakly cached: the copy
goes when the original network goes), and the copy keeps every module path (each folded
BatchNorm becomes an ``nn.Identity``), so layer names resolve on it as on the original and
prefixes and suffixes are cut from it like from the original. One cut means something else on
the copy: the output of a folded convolution now includes its BatchNorm, so :func:`folded` hands
back the original network when a requested layer sits there.

The engine also asks for its copy with every weight in channels_last (NHWC) order. Leaving
the weights in NCHW order cost two things: every convolution call copied its weight into NHWC
order, and a network whose input has one channel (Fashion-MNIST) ran NCHW throughout, since a
1-channel input carries no layout and an NCHW weight then decides it (on an H100 that made every
stitch copy its input and cuDNN transpose; see BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import weakref
from collections import Counter
from dataclasses import replace

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.engine.layers import layer_graph

__all__ = ["folded", "fold_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# original module -> {channels_last: (folded Network or None, names of the folded convolutions)}
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def folded(net, layers=(), channels_last: bool = False):
    """``net`` (a :class:`core.models.network.Network`) with its conv -> BatchNorm pairs folded (cached;
    with ``channels_last``, weights in NHWC order), or ``net`` itself if one of ``layers`` is the
    output of a folded convolution or there is nothing to fold."""
    variants = _FOLDED.setdefault(net.module, {})
    if channels_last not in variants:
        module, convs = fold_batchnorm(net.module, net.input_shape)
        if convs and channels_last:
            module.to(memory_format=torch.channels_last)  # 4-d weights only; the copy is ours
        # nothing to fold (a ViT, say): no copy, and none kept (it would hold the weak key alive)
        variants[channels_last] = (replace(net, module=module) if convs else None, convs)
    network, convs = variants[channels_last]
    return net if network is None or any(layer.node in convs for layer in layers) else network


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return isinstance(conv, _CONVS) and isinstance(norm, nn.modules.batchnorm._BatchNorm) \
        and norm.track_running_stats and norm.running_mean is not None


def fold_batchnorm(module: nn.Module, input_shape) -> tuple[nn.Module, frozenset[str]]:
    """An eval-mode copy of ``module`` in which every BatchNorm fed only by a convolution (used
    only there) is folded into that convolution and replaced by ``nn.Identity``; and the names
    of the convolutions that now include their BatchNorm. With nothing to fold: ``module``
    itself, not a copy."""
    graph = layer_graph(module, input_shape).gm.graph
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1 \
                and calls[source.target] == calls[node.target] == 1 \
                and _foldable(module.get_submodule(source.target), module.get_submodule(node.target)):
            pairs.append((source.target, node.target))  # (not when the conv's raw output is used elsewhere)
        elif node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.Sequential):
            # a Sequential the tracer keeps whole (e.g. torchvision's Conv2dNormActivation): its
            # children run in order, so a conv child feeds only the next child
            children = list(module.get_submodule(node.target).named_children())
            pairs += [(f"{node.target}.{a}", f"{node.target}.{b}")
                      for (a, conv), (b, norm) in zip(children, children[1:]) if _foldable(conv, norm)]
    if not pairs:
        return module, frozenset()
    clone = copy.deepcopy(module).eval()
    for conv_name, norm_name in pairs:
        fused = fuse_conv_bn_eval(clone.get_submodule(conv_name), clone.get_submodule(norm_name))
        clone.set_submodule(conv_name, fused)
        clone.set_submodule(norm_name, nn.Identity())
    return clone, frozenset(conv_name for conv_name, _ in pairs)
