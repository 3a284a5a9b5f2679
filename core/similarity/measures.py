"""The similarity indices StitchLab computes, by name: one registry with one call for every index.

Every index takes the activations of the same n examples at several layers of two networks and
returns a float64 ``(len(feats_a), len(feats_b))`` matrix on the CPU, rows the layers of a::

    MEASURES["svcca"].matrix(feats_a, feats_b, names_a=None, names_b=None)

so the network code (:mod:`core.similarity.networks`), the job kind, the CLI and the Similarity
page need no per-index branches. ``higher_is_similar`` tells how to read (and rank) a matrix:
Procrustes is a *distance* (0 = the same up to rotation), every other index a similarity.

Each index is one module: :mod:`~core.similarity.cka` (linear and RBF CKA),
:mod:`~core.similarity.cca` (SVCCA, PWCCA), :mod:`~core.similarity.procrustes`,
:mod:`~core.similarity.rsa` and :mod:`~core.similarity.encoding` (linear encoding score); their
docstrings state the choices the papers leave open. ``invariances`` lists the changes of one
layer's features that leave an index unchanged (:data:`TRANSFORMS`; tests check every claim and
every omission, and README.md tabulates them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from core.similarity.cca import pwcca_matrix, svcca_matrix
from core.similarity.cka import cka_matrix
from core.similarity.encoding import linear_encoding_matrix
from core.similarity.procrustes import procrustes_matrix
from core.similarity.rsa import rsa_matrix

Features = Sequence[torch.Tensor]

# What an index may be unchanged by, applied to one layer's features (n, p) (or, for the last two,
# to both sides): x Q with Q orthogonal; c x with c > 0; x + b for one vector b; x A with A any
# invertible matrix; the examples reordered alike on both sides; the two layers swapped.
TRANSFORMS = ("rotation", "isotropic scaling", "shift", "invertible linear map", "example order", "swap")


@dataclass(frozen=True)
class Measure:
    name: str  # the CLI's and the URL's spelling
    label: str  # the page's
    higher_is_similar: bool
    summary: str  # one line: what it compares
    compute: Callable[..., torch.Tensor]  # (feats_a, feats_b, names_a=None, names_b=None) -> matrix
    invariances: tuple[str, ...] = ()  # members of TRANSFORMS that leave the index unchanged
    streamed: bool = False  # True: an estimator exists that folds in the examples batch by batch

    def matrix(self, feats_a: Features, feats_b: Features, names_a: Sequence[str] | None = None,
               names_b: Sequence[str] | None = None) -> torch.Tensor:
        return self.compute(list(feats_a), list(feats_b), names_a=names_a, names_b=names_b)


def _linear_cka(feats_a, feats_b, names_a=None, names_b=None) -> torch.Tensor:
    return cka_matrix(feats_a, feats_b, "linear", names_a=names_a, names_b=names_b)


def _rbf_cka(feats_a, feats_b, names_a=None, names_b=None) -> torch.Tensor:
    return cka_matrix(feats_a, feats_b, "rbf", names_a=names_a, names_b=names_b)


_GEOMETRY = ("rotation", "isotropic scaling", "shift", "example order")  # of the examples' point cloud

MEASURES: dict[str, Measure] = {m.name: m for m in [
    Measure("linear-cka", "Linear CKA", True, "centred kernel alignment of the linear kernels", _linear_cka,
            (*_GEOMETRY, "swap"), streamed=True),
    Measure("rbf-cka", "RBF CKA", True, "centred kernel alignment of RBF kernels (bandwidth 0.8 x median distance)",
            _rbf_cka, (*_GEOMETRY, "swap"), streamed=True),
    Measure("svcca", "SVCCA", True, "mean canonical correlation of the top principal directions (99 % of the "
            "variance, at most n/10)", svcca_matrix, (*_GEOMETRY, "swap")),
    Measure("pwcca", "PWCCA", True, "canonical correlations of the same directions, weighted by how much of the "
            "row layer's neurons each holds", pwcca_matrix, ("isotropic scaling", "shift", "example order")),
    Measure("procrustes", "Procrustes distance", False, "residual of the best rotation between the centred, "
            "unit-norm features (0 = the same up to rotation)", procrustes_matrix, (*_GEOMETRY, "swap")),
    Measure("rsa", "RSA", True, "Spearman correlation of the two layers' Euclidean distances between examples",
            rsa_matrix, (*_GEOMETRY, "swap")),
    Measure("linear-encoding", "Linear encoding (R²)", True, "held-out R² of ridge regression from the row layer "
            "to the column layer", linear_encoding_matrix, ("rotation", "isotropic scaling", "shift")),
]}


def check_measures(names: Sequence[str]) -> list[str]:
    """The names, checked: one line naming the unknown one and the known ones."""
    names = list(dict.fromkeys(names))  # a name given twice is computed once
    if not names:
        raise ValueError(f"name at least one similarity measure: {', '.join(MEASURES)}")
    for name in names:
        if name not in MEASURES:
            raise ValueError(f"unknown similarity measure {name!r}: choose from {', '.join(MEASURES)}")
    return names
