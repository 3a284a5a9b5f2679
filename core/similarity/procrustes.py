"""Orthogonal Procrustes distance between two layers' representations of the same examples.

With X (n, p) and Y (n, q) centred over the examples, scaled to ||X||_F = ||Y||_F = 1 and padded
with zero columns to the same width, the distance is the residual of the best rotation (Williams,
Kunz, Kornblith & Linderman 2021; Schönemann 1966 for the minimiser)::

    d(X, Y) = min over orthogonal Q of ||X - Y Q||_F = sqrt(2 - 2 ||X'Y||_*)

where ||.||_* is the nuclear norm (sum of singular values). d is a metric on [0, sqrt(2)]: 0 means
the same up to rotation, reflection, shift and scale. Ding, Denain & Steinhardt (2021) report
d^2 = 2 - 2 ||X'Y||_* under the same name.

Cost, and why the features are reduced first: X'Y is p x q, 16,384 x 16,384 for two flattened
conv layers. Each layer is replaced by an exact n-column factor F with F F' = X X' (from the QR
factorisation X' = Q R, F = R'; X = F Q' with Q' Q = I), so X'Y = Q (F_x' F_y) Q_y' and
||X'Y||_* = ||F_x' F_y||_*: one n x n SVD per pair whatever the width. QR rather than the
eigenvectors of X X' because the nuclear norm sums *every* singular value, and squaring them (a
Gram matrix) would blur those below 1e-8 of the largest; QR is backward stable. A layer with
p <= n features is its own factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.similarity._features import centred, check_layers, pairwise

__all__ = ["procrustes_matrix"]

MIN_EXAMPLES = 2
INDEX = "the Procrustes distance"


def _factor(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(n, min(n, p))`` F with F F' = X X' for X the centred features, scaled to ||F||_F = 1."""
    xc = centred(x, name, INDEX)
    n, p = xc.shape
    factor = xc if p <= n else torch.linalg.qr(xc.T, mode="r").R.T  # X' = Q R, so X = R' Q'
    return factor / torch.linalg.matrix_norm(factor)


def _distance(fa: torch.Tensor, fb: torch.Tensor) -> float:
    nuclear = torch.linalg.svdvals(fa.T @ fb).sum().item()  # ||X'Y||_*, at most ||X||_F ||Y||_F = 1
    # 1 - nuclear is mathematically >= 0; only rounding (about 1e-15 per unit) can take it below
    # that, which would make the square root NaN for two layers equal up to rotation.
    return max(2.0 - 2.0 * nuclear, 0.0) ** 0.5


def procrustes_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor],
                      names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None) -> torch.Tensor:
    """The orthogonal Procrustes distance between every layer in ``feats_a`` and every layer in
    ``feats_b``: 0 = the same up to rotation, shift and scale; at most sqrt(2). A distance: lower
    is more similar.

    Args:
        feats_a, feats_b: tensors ``(n, ...)`` of the same n >= 2 examples, flattened per example.
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).

    Returns:
        float64 ``(len(feats_a), len(feats_b))`` on the CPU; rows are the layers of a.

    Example::

        >>> x = torch.randn(100, 8, dtype=torch.float64)
        >>> q = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64)).Q
        >>> procrustes_matrix([x], [3 * x @ q + 1, torch.randn(100, 8)]).round(decimals=2)  # rotated; unrelated
        tensor([[0.0000, 1.2400]], dtype=torch.float64)
    """
    feats_a, feats_b, names_a, names_b, _ = check_layers(feats_a, feats_b, names_a, names_b, INDEX, MIN_EXAMPLES)
    return pairwise(feats_a, feats_b, names_a, names_b, _factor, _distance)
