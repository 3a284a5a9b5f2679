"""Kernel matrices for CKA: features -> centred features -> Gram matrix -> linear or RBF kernel,
at a precision chosen per device (:func:`gram_precision`), with the flags CKA checks when it reads
a result (features constant, not finite, no RBF bandwidth).

Why centring first, and why float32 is enough on a CPU: see the numerics paragraph of
:mod:`core.similarity.cka`, and BENCHMARKS.md for the measurements.
"""

from __future__ import annotations

import torch

__all__ = ["GRAMS", "KERNELS", "check_kernel", "features_gram", "gram_precision", "kernel_matrix"]

KERNELS = ("linear", "rbf")


def _centred(x: torch.Tensor, name: str, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, ...)`` -> ``(n, p)`` of ``dtype`` centred over the examples, and whether they vary.

    In float32, centring is exact up to the mean's rounding (x - m is exact for x near m, and
    elsewhere rounds relative to the centred value), a shift shared by every example that both
    HSIC estimators and the RBF kernel's distances ignore.

    The flag is a 0-d tensor, checked only when a result is read: on a GPU, reading it here would
    stall the queue per layer and batch (it cost more than all the arithmetic). It is computed on
    the features as they come (exact, at half the memory traffic of float64). Callers zero the
    kernel of constant features (centred, they need not be exact zeros: the mean of n equal floats
    need not equal them). Whether the features are finite is read off their Gram matrix's
    diagonal (see :func:`kernel_matrix`)."""
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"features of {name} must have the examples as their first dimension, got shape "
                         f"{tuple(x.shape)}")
    x = x.detach()
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # Flattened in memory order (H, W, C) rather than copied into (C, H, W) order: a Gram
        # matrix does not depend on the order of the features.
        x = x.permute(0, 2, 3, 1)
    x = x.reshape(x.shape[0], -1)  # (n, ...) -> (n, p)
    if not x.shape[1]:
        varies = torch.zeros((), dtype=torch.bool, device=x.device)
    elif x.device.type == "cpu":  # two column reductions read x at full speed: 2 ms against 12 ms for 500 x 16,384
        varies = (x.amax(0) != x.amin(0)).any()  # a NaN makes both NaN, so "varies", as below
    else:  # one comparison and one reduction: fewer launches, which bound CKA's time on a GPU
        varies = (x != x[:1]).any()
    if dtype == torch.float64:
        xc = x.to(torch.float64)
        xc -= xc.mean(0, keepdim=True)
    else:  # the float32 mean's rounding shifts every example alike, which the estimator ignores
        x = x.to(dtype)
        xc = x - x.mean(0, keepdim=True)
    return xc, varies


GRAMS = ("auto", "float64", "float32", "tf32x3")


def gram_precision(gram: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """The Gram precision that ``gram`` means for features of ``dtype`` on ``device``.

    ``"auto"`` is ``"float32"`` for features of at most 32 bits on a CPU whose float32 matrix
    products are IEEE (PyTorch's default; ``torch.set_float32_matmul_precision("medium")`` makes
    oneDNN round them to bfloat16), and ``"float64"`` everywhere else: float64 features keep
    their digits. Why per device: on two CPU cores a float64 product runs at half the float32
    rate and was 2.6 s of a 5.9 s CKA run (BENCHMARKS.md); on an H100 float64 runs on tensor
    cores as fast as float32, and a float32 product silently becomes TF32 wherever a user allows
    it."""
    if gram not in GRAMS:
        raise ValueError(f"unknown gram precision {gram!r}: choose one of {', '.join(GRAMS)}")
    if gram != "auto":
        return gram
    ieee = torch.backends.mkldnn.matmul.fp32_precision in ("none", "ieee")
    narrow = dtype in (torch.float32, torch.bfloat16, torch.float16)
    return "float32" if torch.device(device).type == "cpu" and ieee and narrow else "float64"


def _gram(xc: torch.Tensor, gram: str = "float64") -> torch.Tensor:
    """``xc @ xc.T`` of centred features, as float64.

    ``"float32"``: the product in ``xc``'s own float32 (see :func:`gram_precision`).
    ``"tf32x3"`` (CUDA only; elsewhere float64): each float32 value is split into a part that
    TF32 holds exactly (10 mantissa bits) and the remainder, and the three products that matter
    (hi·hi, hi·lo, lo·hi) run on tensor cores: close to float32 accuracy at several times
    float64's speed. Centring happened before, in float64, so no large offset is lost.
    """
    if gram == "float32":
        return (xc @ xc.T).to(torch.float64)
    if gram == "float64" or xc.device.type != "cuda":
        return xc @ xc.T
    x = xc.float()
    hi = (x.view(torch.int32) & -8192).view(torch.float32)  # clear the 13 low mantissa bits
    lo = x - hi
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return (torch.addmm(hi @ lo.T, lo, hi.T) + hi @ hi.T).double()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def features_gram(x: torch.Tensor, name: str, gram: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 Gram matrix of ``x``'s centred features at the precision ``gram`` (a resolved
    name, see :func:`gram_precision`), and whether the features vary (see :func:`_centred`).

    A float32 Gram overflows where float64 does not (rows of norm above about 1e19): then this
    layer and batch are redone in float64, so an overflow is never reported as a non-finite
    feature. That check reads a value back, free on a CPU, where ``"auto"`` picks float32."""
    if gram == "float32":
        xc, varies = _centred(x, name, torch.float32)
        product = _gram(xc, gram)
        if bool(torch.isfinite(product.diagonal()).all()):
            return product, varies
    xc, varies = _centred(x, name)
    return _gram(xc, gram), varies


def kernel_matrix(gram: torch.Tensor, varies: torch.Tensor, kernel: str,
            sigma: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``(n, n)`` float64 kernel of centred features with float64 Gram matrix ``gram``, and a
    0-d flag, checked when a result is read, that is False where the RBF bandwidth came out 0
    (None for the linear kernel, which needs none).

    The linear kernel is ``gram`` itself. Callers zero the kernels of constant features (a
    constant kernel has zero HSIC, biased and unbiased, with anything, so zeros are exact) and
    check finiteness on the Gram diagonals (a NaN or infinity anywhere in a row makes that row's
    centred squared norm NaN or infinite: n values instead of a pass over n x p features), for
    all layers at once where they can: on a GPU, CKA's time is the host launching small
    operations. Nothing here reads a value back to the host, which would stall a GPU's queue."""
    n = gram.shape[0]
    if kernel == "linear":
        return gram, None
    sq_norms = gram.diagonal()
    # Rounding can make a squared distance slightly negative; it is a distance, so >= 0.
    d2 = (sq_norms[:, None] + sq_norms[None, :] - 2 * gram).clamp_min_(0.0)
    d2.fill_diagonal_(0.0)
    # The median over pairs i < j, as torch.median picks it (the lower middle): each pair appears
    # twice off the diagonal, and the n diagonal zeros sort first, so it is this order statistic of
    # the whole matrix (no (n^2/2)-element index is built). A real element, so its square root is
    # the median distance.
    median_d2 = d2.reshape(-1).kthvalue(n + (n * (n - 1) - 1) // 2 + 1).values
    bandwidth_ok = median_d2 > 0  # more than half the pairs identical: no bandwidth (constant: zeros anyway)
    rbf = torch.exp(-d2 / (2 * sigma**2 * torch.where(bandwidth_ok, median_d2, 1.0)))
    return torch.where(varies & bandwidth_ok, rbf, 0.0), bandwidth_ok | ~varies


def check_kernel(kernel: str, sigma: float) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
    # Bounded, not only positive: sigma**2 overflows past 1e154, and at 1e-160 or at inf every
    # kernel value is the same, which CKA would report as an undefined layer rather than a bad sigma.
    if kernel == "rbf" and not 1e-3 <= sigma <= 1e3:
        raise ValueError(f"sigma is the RBF bandwidth as a fraction of the median distance and must be positive, "
                         f"from 0.001 to 1000 (0.8 is usual), got {sigma}")
