"""What every similarity index besides CKA starts from: checked layers, and each layer's features
flattened per example, centred over the examples, in float64.

Why float64 throughout (CKA's Gram matrices may be float32 on a CPU; these may not): CCA whitens,
Procrustes sums every singular value and ridge regression inverts a penalised Gram, so each one
amplifies exactly the small directions that float32 rounding (1e-7 of the largest) blurs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.similarity.cka import _batch_size, _names
from core.similarity.kernels import _centred

__all__ = ["check_layers", "centred", "gram", "pairwise"]


def check_layers(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], names_a, names_b, index: str,
                 min_examples: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str], list[str], int]:
    """The layers as lists, their names (``a[0]``, ... by default) and the shared example count ``n``."""
    feats_a, feats_b = list(feats_a), list(feats_b)
    if not feats_a or not feats_b:
        raise ValueError(f"{index} needs at least one layer on each side, got {len(feats_a)} and {len(feats_b)}")
    names_a, names_b = _names(names_a, len(feats_a), "a"), _names(names_b, len(feats_b), "b")
    n = _batch_size(feats_a + feats_b, names_a + names_b)
    if n < min_examples:
        raise ValueError(f"{index} needs at least {min_examples} examples (images), got {n}; use more images")
    return feats_a, feats_b, names_a, names_b, n


def centred(x: torch.Tensor, name: str, index: str) -> torch.Tensor:
    """``x`` ``(n, ...)`` as float64 ``(n, p)``, each feature centred over the examples (on the CPU).

    A channels-last tensor is flattened in memory order (no copy): every index here is unchanged
    by a permutation of the features."""
    xc, varies = _centred(x.cpu(), name, torch.float64)
    if not bool(torch.isfinite(xc).all()):
        raise ValueError(f"features of {name} contain NaN or infinite values; {index} is undefined for them")
    if not bool(varies):
        raise ValueError(f"{index} is undefined for layer {name}: its features are the same for every example "
                         f"(constant features); leave this layer out")
    return xc


def gram(xc: torch.Tensor) -> torch.Tensor:
    """``xc @ xc.T`` ``(n, n)``, exactly symmetric (the product's two triangles can round apart)."""
    K = xc @ xc.T
    return (K + K.T) / 2


def pairwise(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], names_a: list[str], names_b: list[str],
             prepare_b, score, prepare_a=None) -> torch.Tensor:
    """``score(prepare_a(a_i), prepare_b(b_j))`` for every pair, float64 ``(len(a), len(b))``.

    Each layer of b is prepared once and kept; the layers of a one at a time, so memory holds b's
    preparations and one of a's (a network's wide layers can be hundreds of MB each at thousands
    of images). ``prepare_a`` defaults to ``prepare_b``, and then a tensor on both sides (a
    network against itself) is prepared once."""
    kept: dict[int, object] = {}
    for y, name in zip(feats_b, names_b):
        if id(y) not in kept:
            kept[id(y)] = prepare_b(y, name)
    rows = []
    for x, name in zip(feats_a, names_a):
        prepared = kept[id(x)] if prepare_a is None and id(x) in kept else (prepare_a or prepare_b)(x, name)
        rows.append([score(prepared, kept[id(y)]) for y in feats_b])
        del prepared  # before the next layer of a is prepared
    return torch.tensor(rows, dtype=torch.float64)
