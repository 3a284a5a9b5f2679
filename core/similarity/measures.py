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
from dataclasses import asdict, dataclass

import torch

from core.similarity.catalogue import CATALOGUE, TRANSFORMS, MeasureInfo, check_measure_names
from core.similarity.cca import pwcca_matrix, svcca_matrix
from core.similarity.cka import cka_matrix
from core.similarity.encoding import linear_encoding_matrix
from core.similarity.procrustes import procrustes_matrix
from core.similarity.rsa import rsa_matrix

__all__ = ["MEASURES", "Measure", "TRANSFORMS", "check_measures"]  # TRANSFORMS: the catalogue's, for tests

Features = Sequence[torch.Tensor]


@dataclass(frozen=True)
class Measure(MeasureInfo):
    """A catalogue entry (:class:`core.similarity.catalogue.MeasureInfo`) with the function that computes it."""

    compute: Callable[..., torch.Tensor] | None = None  # (feats_a, feats_b, names_a=None, names_b=None) -> matrix

    def matrix(self, feats_a: Features, feats_b: Features, names_a: Sequence[str] | None = None,
               names_b: Sequence[str] | None = None) -> torch.Tensor:
        return self.compute(list(feats_a), list(feats_b), names_a=names_a, names_b=names_b)


def _linear_cka(feats_a, feats_b, names_a=None, names_b=None) -> torch.Tensor:
    return cka_matrix(feats_a, feats_b, "linear", names_a=names_a, names_b=names_b)


def _rbf_cka(feats_a, feats_b, names_a=None, names_b=None) -> torch.Tensor:
    return cka_matrix(feats_a, feats_b, "rbf", names_a=names_a, names_b=names_b)


_COMPUTE = {"linear-cka": _linear_cka, "rbf-cka": _rbf_cka, "svcca": svcca_matrix, "pwcca": pwcca_matrix,
            "procrustes": procrustes_matrix, "rsa": rsa_matrix, "linear-encoding": linear_encoding_matrix}
if set(_COMPUTE) != set(CATALOGUE):  # an index named in one place only: caught on import, not on a page
    raise ImportError(f"the similarity catalogue and registry differ: {sorted(set(_COMPUTE) ^ set(CATALOGUE))}")

MEASURES: dict[str, Measure] = {name: Measure(**asdict(info), compute=_COMPUTE[name])
                                for name, info in CATALOGUE.items()}


def check_measures(names: Sequence[str]) -> list[str]:
    """The names, each once, checked: one line naming an unknown one and the known ones."""
    return check_measure_names(names)
