"""Representational similarity analysis (RSA; Kriegeskorte, Mur & Bandettini 2008): do two layers
put the same examples far apart?

Each layer's representational dissimilarity matrix (RDM) holds the distance between every two
examples' features; RSA is the Spearman rank correlation of the two RDMs' upper triangles (the
n(n-1)/2 pairs i < j), ties given their average rank (as scipy.stats.spearmanr).

The dissimilarity is the **Euclidean distance** between the examples' feature vectors (the
papers also use 1 - Pearson correlation). Why Euclidean: it is unchanged by rotating a layer's
feature space, like CKA's and the Procrustes distance's geometry, whereas the correlation
distance centres each example across its features, which mixes a conv layer's channels and
positions and depends on the feature basis. Spearman only sees the distances' order, so squared
distances (read off the centred Gram matrix K: d_ij^2 = K_ii + K_jj - 2 K_ij, one n x n matrix
product instead of n^2 / 2 differences of p-vectors) give the same ranks. Squared distances within
1e-13 of the largest squared norm of each other tie: the Gram route computes equal distances a
rounding apart (exact differences would tie them), and rounding must not order them.

Memory: a float64 rank vector of n(n-1)/2 entries for every layer of b and one of a at a time
(16 MB a layer at n = 2,000; 295 MB at 8,594).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.similarity._features import centred, check_layers, gram, pairwise

__all__ = ["average_ranks", "rsa_matrix"]

MIN_EXAMPLES = 3  # two pairs of examples, the fewest that can be ranked
_TIE = 1e-13  # squared distances closer than this share of the largest squared norm are equal up to rounding
INDEX = "RSA"


def average_ranks(values: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """1-based ranks of a 1-d tensor, ties sharing their average rank (float64); values within
    ``tolerance`` of the next smaller one join its tie."""
    order = torch.argsort(values, stable=True)
    ascending = values[order]
    starts = torch.ones(len(values), dtype=torch.bool)
    starts[1:] = (ascending[1:] - ascending[:-1]) > tolerance
    group = starts.cumsum(0) - 1  # each sorted value's tie group
    counts = torch.bincount(group)
    last = counts.cumsum(0).to(torch.float64)  # the rank of each tie group's last member
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = (last - (counts - 1) / 2)[group]  # the mean of ranks last - count + 1 .. last
    return ranks


def _standard_ranks(x: torch.Tensor, name: str) -> torch.Tensor:
    """The ranks of the layer's squared distances, centred and scaled to unit norm ``(n(n-1)/2,)``."""
    K = gram(centred(x, name, INDEX))
    n = len(K)
    rows, cols = torch.triu_indices(n, n, 1)
    norms = K.diagonal()
    squared = norms[rows] + norms[cols] - 2 * K[rows, cols]
    # Equal distances (duplicate examples, a symmetric arrangement) come out of the Gram matrix a
    # few roundings apart (each K_ij is a p-term sum): they tie, rather than be ordered by rounding.
    ranks = average_ranks(squared, _TIE * norms.max().item())
    ranks -= ranks.mean()
    size = torch.linalg.vector_norm(ranks)
    if not size > 0:
        raise ValueError(f"RSA is undefined for layer {name}: every two examples are equally far apart (a "
                         f"dissimilarity matrix with one value), so its ranks do not vary; leave this layer out")
    return ranks / size


def rsa_matrix(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], names_a: Sequence[str] | None = None,
               names_b: Sequence[str] | None = None) -> torch.Tensor:
    """RSA between every layer in ``feats_a`` and every layer in ``feats_b``: the Spearman correlation
    of their Euclidean RDMs, in [-1, 1]; 1 = the same order of pairwise distances.

    Args:
        feats_a, feats_b: tensors ``(n, ...)`` of the same n >= 3 examples, flattened per example.
        names_a, names_b: layer names for error messages (default ``a[0]``, ``b[0]``, ...).

    Returns:
        float64 ``(len(feats_a), len(feats_b))`` on the CPU; rows are the layers of a.

    Example::

        >>> x = torch.randn(50, 4, 3, 3)
        >>> rsa_matrix([x], [x, 5 * x - 2])
        tensor([[1., 1.]], dtype=torch.float64)
    """
    feats_a, feats_b, names_a, names_b, _ = check_layers(feats_a, feats_b, names_a, names_b, INDEX, MIN_EXAMPLES)
    return pairwise(feats_a, feats_b, names_a, names_b, _standard_ranks, _spearman)


def _spearman(ra: torch.Tensor, rb: torch.Tensor) -> float:
    return torch.dot(ra, rb).item()  # Pearson correlation of the ranks = Spearman's rho
