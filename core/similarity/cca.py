"""SVCCA and PWCCA: canonical correlation analysis (CCA) of two layers' principal subspaces.

CCA finds directions in layer a's and layer b's feature spaces whose projections correlate most
over the examples; the canonical correlations rho_1 >= rho_2 >= ... are the cosines of the
principal angles between the two layers' (centred) column spaces in example space, so they are
the singular values of ``Ua' Ub`` for orthonormal bases Ua (n, ka) and Ub (n, kb) (Björck & Golub
1973). Both indices first reduce each layer to its top principal directions (Raghu et al. 2017):

* **SVCCA** (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017): the mean of the min(ka, kb)
  canonical correlations.
* **PWCCA** (Morcos, Raghu & Bengio 2018): their mean weighted by how much of layer a each
  canonical direction accounts for: with h_i layer a's i-th canonical variate (unit norm, in
  example space) and x_j its j-th centred neuron, alpha_i = sum_j |<h_i, x_j>| and
  PWCCA = sum_i alpha_i rho_i / sum_i alpha_i. The weights come from side a (the row's layer), so
  PWCCA(a, b) != PWCCA(b, a) in general (the published code takes the side with fewer neurons;
  repsim averages both).

Choices the papers leave open, stated:

* Kept directions: the fewest top principal directions holding ``keep_variance`` = 99 % of the
  layer's variance (Raghu et al.), **and at most n // 10 of them** (``examples_per_dim``). CCA of
  ka + kb >= n dimensions on n examples has canonical correlations of 1 whatever the data, and
  on independent data E[mean rho^2] = max(ka, kb) / (n - 1) (a random kb-dimensional subspace), so
  a layer needs many more examples than kept dimensions. Flattened conv layers on 2,000 images need
  1,000-1,450 directions for 99 % (the bundled default pair), which would make every cell near 1;
  the cap keeps the noise floor at E[mean rho^2] <= 0.1.
* Directions whose variance is below 1e-10 of the largest one's are never kept: a float64 Gram
  matrix cannot resolve them (its eigenvalues carry errors of about n * 1e-16 of the largest).
* PWCCA uses the same kept subspaces as SVCCA (Morcos et al. assume more examples than neurons,
  which flattened conv layers never have), with the weights over all of layer a's neurons.

Cost: per layer one float64 Gram matrix (n x n; or p x p when p < n) and its eigendecomposition,
which is exact in the kept directions; per pair one SVD of a ka x kb matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.similarity._features import centred, check_layers, gram, pairwise

__all__ = ["EXAMPLES_PER_DIM", "KEEP_VARIANCE", "kept_dimensions", "pwcca_matrix", "svcca_matrix"]

KEEP_VARIANCE = 0.99  # Raghu et al. 2017
EXAMPLES_PER_DIM = 10  # at most n // 10 kept directions: see the module docstring
_NOISE_FLOOR = 1e-10  # variance below this fraction of the largest direction's is rounding, not signal
MIN_EXAMPLES = 10


@dataclass
class _Subspace:
    basis: torch.Tensor  # (n, k) orthonormal, centred: the top k principal directions in example space
    neurons: torch.Tensor | None  # (k, p) basis' x_c: every neuron in the basis' coordinates (PWCCA's side a)


def kept_dimensions(variances: torch.Tensor, keep_variance: float, cap: int) -> int:
    """How many of the principal variances (descending) are kept: the fewest holding ``keep_variance``
    of the total, never one under the noise floor, at most ``cap``."""
    variances = variances.clamp_min(0.0)  # eigenvalues of a null direction round to +-1e-13 of the largest
    share = variances.cumsum(0) / variances.sum()
    enough = int((share < keep_variance).sum()) + 1
    resolved = int((variances > _NOISE_FLOOR * variances[0]).sum())
    return max(1, min(enough, resolved, cap))


def _subspace(x: torch.Tensor, name: str, index: str, keep_variance: float, cap: int, neurons: bool) -> _Subspace:
    xc = centred(x, name, index)
    n, p = xc.shape
    if p < n:  # the p x p covariance is the smaller eigenproblem
        variances, V = torch.linalg.eigh(gram(xc.T))
        variances, V = variances.flip(0), V.flip(1)  # descending
        k = kept_dimensions(variances, keep_variance, cap)
        basis = torch.linalg.qr(xc @ V[:, :k]).Q  # (n, k): orthonormal although V's columns scale unequally
    else:  # p >= n (wide conv layers): the n x n Gram matrix has the same non-zero spectrum
        variances, U = torch.linalg.eigh(gram(xc))
        variances, U = variances.flip(0), U.flip(1)
        k = kept_dimensions(variances, keep_variance, cap)
        basis = U[:, :k].contiguous()
    # Neurons projected once per layer, (k, p), not once per pair: a pair then costs k x k x p, not n x k x p.
    return _Subspace(basis, basis.T @ xc if neurons else None)


def _canonical(a: _Subspace, b: _Subspace) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical correlations ``(m,)``, m = min(ka, kb), descending, and layer a's canonical
    directions in its basis' coordinates ``(ka, m)``."""
    L, rho, _ = torch.linalg.svd(a.basis.T @ b.basis, full_matrices=False)
    return rho, L


def _check_options(keep_variance, examples_per_dim) -> None:
    if isinstance(keep_variance, bool) or not isinstance(keep_variance, int | float) or not 0 < keep_variance <= 1:
        raise ValueError(f"keep_variance is the share of each layer's variance kept, in (0, 1], got {keep_variance!r}")
    if isinstance(examples_per_dim, bool) or not isinstance(examples_per_dim, int) or examples_per_dim < 2:
        raise ValueError(f"examples_per_dim must be an integer of at least 2 (CCA of n dimensions on n examples is "
                         f"1 whatever the data), got {examples_per_dim!r}")


def _cca_matrix(feats_a, feats_b, names_a, names_b, index: str, keep_variance: float, examples_per_dim: int,
                score, weighted_by_a: bool) -> torch.Tensor:
    _check_options(keep_variance, examples_per_dim)
    feats_a, feats_b, names_a, names_b, n = check_layers(feats_a, feats_b, names_a, names_b, index, MIN_EXAMPLES)
    cap = n // examples_per_dim

    def subspace(x, name):
        return _subspace(x, name, index, keep_variance, cap, neurons=False)

    def weighted_subspace(x, name):  # PWCCA weighs by side a's neurons
        return _subspace(x, name, index, keep_variance, cap, neurons=True)

    return pairwise(feats_a, feats_b, names_a, names_b, subspace, score,
                    prepare_a=weighted_subspace if weighted_by_a else None)


def _svcca(a: _Subspace, b: _Subspace) -> float:
    return torch.linalg.svdvals(a.basis.T @ b.basis).mean().item()


def _pwcca(a: _Subspace, b: _Subspace) -> float:
    rho, L = _canonical(a, b)
    # <h_i, x_j> with h_i = basis @ L[:, i], layer a's canonical variates (orthonormal in example space)
    alpha = (L.T @ a.neurons).abs().sum(1)  # (m,): sum_j |<h_i, x_j>| over a's neurons
    return ((alpha * rho).sum() / alpha.sum()).item()


def svcca_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], names_a: Sequence[str] | None = None,
                 names_b: Sequence[str] | None = None, keep_variance: float = KEEP_VARIANCE,
                 examples_per_dim: int = EXAMPLES_PER_DIM) -> torch.Tensor:
    """SVCCA between every layer in ``feats_a`` and every layer in ``feats_b``: 1 = the same subspace.

    Args:
        feats_a, feats_b: tensors ``(n, ...)`` of the same n >= 10 examples, flattened per example.
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).
        keep_variance: the share of each layer's variance its kept directions hold (0.99); 1 keeps
            every resolved direction (plain CCA).
        examples_per_dim: at most ``n // examples_per_dim`` directions are kept per layer.

    Returns:
        float64 ``(len(feats_a), len(feats_b))`` on the CPU; rows are the layers of a.

    Example::

        >>> x = torch.randn(500, 16, 2, 2)
        >>> svcca_matrix([x], [x, 2 * x.flip(1) + 1])   # same subspace: 1 (up to rounding)
        tensor([[1.0000, 1.0000]], dtype=torch.float64)
    """
    return _cca_matrix(feats_a, feats_b, names_a, names_b, "SVCCA", keep_variance, examples_per_dim, _svcca,
                       weighted_by_a=False)


def pwcca_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], names_a: Sequence[str] | None = None,
                 names_b: Sequence[str] | None = None, keep_variance: float = KEEP_VARIANCE,
                 examples_per_dim: int = EXAMPLES_PER_DIM) -> torch.Tensor:
    """PWCCA between every layer in ``feats_a`` and every layer in ``feats_b``, weighted by side a.

    Arguments and result as in :func:`svcca_matrix`. Not symmetric: entry (i, j) weights the
    canonical correlations by how much of ``feats_a[i]``'s neurons each canonical direction holds.
    """
    return _cca_matrix(feats_a, feats_b, names_a, names_b, "PWCCA", keep_variance, examples_per_dim, _pwcca,
                       weighted_by_a=True)
