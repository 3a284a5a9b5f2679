"""Stitch layers, chosen by the shapes they connect, and the stitched network.

The rule (the seed paper's, extended to vectors and token sequences):

==========================  =================================================================
sender -> receiver          stitch
==========================  =================================================================
map -> map, same size       1x1 conv
map -> map, k times larger  k x k conv with stride k (k an integer, both sides)
map -> map, other sizes     1x1 conv and resampling to the receiver's size: adaptive average
                            pooling before the conv when shrinking by a non-integer ratio
                            (7 -> 4); nearest upsampling after the conv when growing (4 -> 8,
                            or 4 -> 7), which equals upsampling first, at 1/k^2 the cost
anything -> vector          flatten + linear
vector -> map / tokens      linear, reshaped (only while it stays under ``max_params``)
map/tokens -> tokens        spatial positions become tokens; token count resampled by linear
                            interpolation when it differs; linear map per token
tokens -> map               tokens resampled to H*W positions; linear map per position
==========================  =================================================================

Every stitch is ``[BatchNorm] -> resample -> linear -> [BatchNorm] -> reshape``; the linear
part is one ``nn.Conv2d`` or ``nn.Linear``, which is what least squares solves for
(:mod:`core.engine.lstsq`). A pair whose stitch would exceed ``max_params`` is *not stitchable*:
:func:`make_stitch` raises :class:`NotStitchable`, which a grid records as ``null``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Stitch", "make_stitch", "NotStitchable", "StitchedNetwork", "stitch_kind", "DEFAULT_MAX_PARAMS"]

from core.engine.results import DEFAULT_MAX_PARAMS
from core.errors import NotStitchable


def _kind(shape) -> str:
    return {3: "map", 2: "tokens", 1: "vector"}.get(len(shape), "other")


def stitch_kind(sender_shape, receiver_shape) -> str:
    """Which family of stitch connects the two shapes (``conv1x1``, ``conv_kxk``, ``linear``,
    ``tokens``, ``tokens_to_map``); raises :class:`NotStitchable` if none does."""
    s, r = _kind(sender_shape), _kind(receiver_shape)
    if "other" in (s, r):
        raise NotStitchable(f"cannot stitch shape {tuple(sender_shape)} into {tuple(receiver_shape)}: "
                            f"only (C, H, W) maps, (T, D) tokens and (D,) vectors are supported")
    if r == "vector" or s == "vector":
        return "linear"
    if s == "map" and r == "map":
        ratio = _integer_ratio(sender_shape[1:], receiver_shape[1:])
        return "conv_kxk" if ratio and ratio > 1 else "conv1x1"
    if r == "tokens":
        return "tokens"
    return "tokens_to_map"


def _integer_ratio(sender_hw, receiver_hw) -> int | None:
    """k if the sender's map is exactly k times the receiver's in both dimensions."""
    (hs, ws), (hr, wr) = sender_hw, receiver_hw
    if hs % hr or ws % wr or hs // hr != ws // wr:
        return None
    return hs // hr


class _Resample(nn.Module):
    """Bring a sender activation to the rows the linear part consumes (no parameters).

    Maps that must *grow* are not resampled here: a 1x1 conv commutes with nearest
    upsampling, so :class:`Stitch` applies the conv at the sender's (smaller) resolution and
    upsamples its output, k^2 times cheaper (see ``_upsample``).
    """

    def __init__(self, kind: str, sender_shape, receiver_shape):
        super().__init__()
        self.kind, self.sender_shape, self.receiver_shape = kind, tuple(sender_shape), tuple(receiver_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv_kxk":  # the strided convolution itself does the resampling
            return x
        if self.kind == "conv1x1":
            (h, w), size = x.shape[2:], self.receiver_shape[1:]
            if (h, w) != tuple(size) and h >= size[0] and w >= size[1]:
                return F.adaptive_avg_pool2d(x, size)  # shrink by a non-integer ratio
            return x
        if self.kind == "linear":
            return x.flatten(1)  # (B, ...) -> (B, D)
        if x.dim() == 4:  # map -> tokens: (B, C, H, W) -> (B, H*W, C)
            x = x.flatten(2).transpose(1, 2)
        target = self.receiver_shape[0] if self.kind == "tokens" else math.prod(self.receiver_shape[1:])
        if x.shape[1] != target:  # (B, T, D) -> (B, T', D), linear interpolation along tokens
            x = F.interpolate(x.transpose(1, 2), size=target, mode="linear", align_corners=False).transpose(1, 2)
        return x


def _growth(kind: str, sender_shape, receiver_shape):
    """None, an integer factor k, or a target size, for conv1x1 stitches whose map must grow."""
    if kind != "conv1x1":
        return None
    (hs, ws), (hr, wr) = sender_shape[1:], receiver_shape[1:]
    if (hs, ws) == (hr, wr) or (hs >= hr and ws >= wr):
        return None
    k = _integer_ratio((hr, wr), (hs, ws))
    return k if k else (hr, wr)


def _upsample(y: torch.Tensor, growth) -> torch.Tensor:
    if isinstance(growth, int):  # nearest upsampling by k as a broadcast copy: ~9x faster on CPU
        b, c, h, w = y.shape
        if y.dim() == 4 and not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last):
            # Copy in NHWC order so the result stays channels_last: a grid concatenates the
            # stitches into one receiver layer, and one NCHW tensor among them makes the whole
            # batch NCHW, which halves the speed of the receiver's convolutions on a CPU.
            nhwc = y.permute(0, 2, 3, 1)
            grown = nhwc[:, :, None, :, None, :].expand(b, h, growth, w, growth, c)
            return grown.reshape(b, h * growth, w * growth, c).permute(0, 3, 1, 2)
        return y[:, :, :, None, :, None].expand(b, c, h, growth, w, growth).reshape(b, c, h * growth, w * growth)
    return F.interpolate(y, size=growth, mode="nearest")


class _TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the feature dimension of (B, T, D) tokens."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _batchnorm(shape) -> nn.Module:
    kind = _kind(shape)
    if kind == "map":
        return nn.BatchNorm2d(shape[0])
    if kind == "tokens":
        return _TokenBatchNorm(shape[1])
    return nn.BatchNorm1d(shape[0])


class Stitch(nn.Module):
    """``[BatchNorm] -> resample -> linear -> [BatchNorm] -> reshape``, from sender to receiver shape."""

    # k x k stride-k stitches run on CUDA as one matrix product (:meth:`_patch_product`); False
    # runs cuDNN's convolution instead (the engine's ``patch_product`` option, for benchmarks).
    patch_product = True

    def __init__(self, sender_shape, receiver_shape, bn_before: bool = False, bn_after: bool = False,
                 max_params: int = DEFAULT_MAX_PARAMS):
        super().__init__()
        self.sender_shape, self.receiver_shape = tuple(sender_shape), tuple(receiver_shape)
        self.kind = stitch_kind(sender_shape, receiver_shape)
        d_in, d_out, k = self._linear_dims()
        n_params = d_in * d_out + d_out
        if n_params > max_params:
            raise NotStitchable(f"a {self.kind} stitch from {self.sender_shape} to {self.receiver_shape} would have "
                                f"{n_params:,} parameters, over the limit of {max_params:,}")
        self.bn_before = _batchnorm(self.sender_shape) if bn_before else nn.Identity()
        self.resample = _Resample(self.kind, self.sender_shape, self.receiver_shape)
        if self.kind == "conv1x1":
            self.linear = nn.Conv2d(self.sender_shape[0], self.receiver_shape[0], 1)
        elif self.kind == "conv_kxk":
            self.linear = nn.Conv2d(self.sender_shape[0], self.receiver_shape[0], k, stride=k)
        else:
            self.linear = nn.Linear(d_in, d_out)
        self.bn_after = _batchnorm(self.receiver_shape) if bn_after else nn.Identity()
        self.growth = _growth(self.kind, self.sender_shape, self.receiver_shape)

    def _linear_dims(self) -> tuple[int, int, int]:
        """(inputs per output, outputs, kernel size) of the linear part."""
        s, r = self.sender_shape, self.receiver_shape
        if self.kind == "conv1x1":
            return s[0], r[0], 1
        if self.kind == "conv_kxk":
            k = _integer_ratio(s[1:], r[1:])
            return s[0] * k * k, r[0], k
        if self.kind == "linear":
            return math.prod(s), math.prod(r), 1
        d_in = s[1] if len(s) == 2 else s[0]  # tokens: D; map: C
        d_out = r[1] if self.kind == "tokens" else r[0]
        return d_in, d_out, 1

    @property
    def has_batchnorm(self) -> bool:
        return not (isinstance(self.bn_before, nn.Identity) and isinstance(self.bn_after, nn.Identity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resample(self.bn_before(x))
        if self.kind == "conv_kxk" and x.is_cuda and self.patch_product:
            y = self._patch_product(x)
        else:
            y = self.linear(x)
        if self.kind == "linear":
            y = y.view(y.shape[0], *self.receiver_shape)
        elif self.kind == "tokens_to_map":  # (B, H*W, C) -> (B, C, H, W)
            y = y.transpose(1, 2).reshape(y.shape[0], *self.receiver_shape)
        elif self.growth is not None:
            y = _upsample(y, self.growth)
        return self.bn_after(y)

    # --- least squares view: the linear part as rows -> rows ----------------------------------
    def design_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Sender activations as the rows the linear part maps: ``(rows, inputs per output)``.

        For a map growing by an integer factor k the rows stay at the sender's resolution and
        :meth:`target_rows` averages each k x k block of the receiver: least squares over the
        k^2 duplicated rows has exactly the same solution, with k^2 fewer rows.
        """
        x = self.resample(x)
        if self.kind == "conv1x1":  # (B, C, H, W) -> (B*H*W, C)
            if self.growth is not None and not isinstance(self.growth, int):
                x = _upsample(x, self.growth)  # non-integer growth: rows at the receiver's resolution
            return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        if self.kind == "conv_kxk":
            return self._patches(x)
        return x.reshape(-1, x.shape[-1])  # linear: (B, D); tokens: (B*T, D)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """Non-overlapping k x k patches ``(B*H/k*W/k, k*k*C)`` (k divides H and W), each in
        (row, column, channel) order, the order of a channels_last map: the copy then moves whole
        rows of k*C contiguous values, 5-17x faster on a CPU than the (channel, row, column)
        order of ``F.unfold`` and of the conv weight (:meth:`row_weight` permutes the weight
        instead). One strided copy: on CUDA ``F.unfold`` runs one kernel per image."""
        b, c, h, w = x.shape
        k = self.linear.kernel_size[0]
        patches = x.reshape(b, c, h // k, k, w // k, k)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(-1, k * k * c)  # (B, H/k, W/k, k, k, C)

    def row_weight(self) -> torch.Tensor:
        """The linear part as the ``(outputs, inputs per output)`` matrix that maps
        :meth:`design_rows` to :meth:`target_rows` (without the bias)."""
        weight = self.linear.weight
        if self.kind == "conv_kxk":  # (C', C, k, k) -> (C', k, k, C): the patches' order
            weight = weight.permute(0, 2, 3, 1)
        return weight.reshape(weight.shape[0], -1)

    def _patch_product(self, x: torch.Tensor) -> torch.Tensor:
        """The k x k convolution with stride k as one matrix product of the patches; channels_last
        out. On CUDA only: cuDNN ran the convolution with a legacy kernel (27 TFLOP/s for 8 x 8
        patches on an H100, 16 % of a grid's scoring time), the product runs on tensor cores. The
        CPU keeps oneDNN's convolution, which its figures were measured with."""
        b, _, h, w = x.shape
        k = self.linear.kernel_size[0]
        y = F.linear(self._patches(x), self.row_weight(), self.linear.bias)  # (B*L, C')
        return y.view(b, h // k, w // k, -1).permute(0, 3, 1, 2)

    def target_rows(self, y: torch.Tensor) -> torch.Tensor:
        """Receiver activations as the rows the linear part should produce: ``(rows, outputs)``."""
        if isinstance(self.growth, int):
            y = F.avg_pool2d(y, self.growth)
        if self.kind in ("conv1x1", "conv_kxk", "tokens_to_map"):  # (B, C, H, W) -> (B*H*W, C)
            return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
        if self.kind == "linear":
            return y.reshape(y.shape[0], -1)
        return y.reshape(-1, y.shape[-1])  # tokens

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the linear part from ``weight`` (outputs, inputs per output), in the order of
        :meth:`row_weight`, and ``bias`` (outputs,)."""
        with torch.no_grad():
            if self.kind == "conv_kxk":  # (C', k*k*C) in patch order -> (C', C, k, k)
                c_out, c_in, k, _ = self.linear.weight.shape
                weight = weight.reshape(c_out, k, k, c_in).permute(0, 3, 1, 2)
            self.linear.weight.copy_(weight.reshape(self.linear.weight.shape))
            self.linear.bias.copy_(bias)

    def identity_(self) -> Stitch:
        """Make this stitch the identity (equal shapes, no resampling): for sanity checks."""
        if self.sender_shape != self.receiver_shape or self.kind not in ("conv1x1", "tokens", "linear"):
            raise ValueError(f"an identity stitch needs equal shapes, got {self.sender_shape} -> {self.receiver_shape}")
        d = self.linear.weight.shape[0]
        self.set_linear(torch.eye(d), torch.zeros(d))
        return self


def make_stitch(sender_shape, receiver_shape, bn_before: bool = False, bn_after: bool = False,
                max_params: int = DEFAULT_MAX_PARAMS, seed: int | None = None) -> Stitch:
    """A freshly initialised :class:`Stitch` (seeded if ``seed`` is given)."""
    if seed is None:
        return Stitch(sender_shape, receiver_shape, bn_before, bn_after, max_params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Stitch(sender_shape, receiver_shape, bn_before, bn_after, max_params)


class StitchedNetwork(nn.Module):
    """sender up to layer i -> stitch -> receiver from layer j.

    Takes the *sender's* prepared input (``sender.prepare(images)``) and returns the
    receiver's logits. Sender and receiver stay frozen; only ``stitch`` has parameters that
    train.
    """

    def __init__(self, sender_prefix: nn.Module, stitch: Stitch, receiver_suffix: nn.Module):
        super().__init__()
        self.sender_prefix = sender_prefix
        self.stitch = stitch
        self.receiver_suffix = receiver_suffix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (activation,) = self.sender_prefix(x)
        return self.receiver_suffix(self.stitch(activation))


def stitch(sender, receiver, sender_layer: str, receiver_layer: str, bn_before: bool = False,
           bn_after: bool = False, seed: int | None = None, max_params: int = DEFAULT_MAX_PARAMS) -> StitchedNetwork:
    """Stitch ``sender`` (a Network) at ``sender_layer`` into ``receiver`` at ``receiver_layer``.

    The stitch is freshly initialised (untrained); train it with :func:`core.engine.grid.run_grid`
    or your own loop over ``result.stitch.parameters()``.

    Example::

        >>> a, b = load_model("zoo/resnet_1111-s0"), load_model("zoo/resnet_1111-s1")
        >>> net = stitch(a, b, "layer2.0", "layer2.0")
        >>> net(a.prepare(torch.rand(4, 1, 32, 32))).shape
        torch.Size([4, 10])
    """
    from core.engine.layers import receiver_suffix, resolve_layer, sender_prefix

    s_layer, r_layer = resolve_layer(sender, sender_layer), resolve_layer(receiver, receiver_layer)
    module = make_stitch(s_layer.shape, r_layer.shape, bn_before, bn_after, max_params, seed)
    device = next(receiver.module.parameters()).device
    return StitchedNetwork(sender_prefix(sender, [s_layer]), module.to(device), receiver_suffix(receiver, r_layer))
