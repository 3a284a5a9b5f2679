"""What a page needs to know about the similarity measures before anything runs, without torch:
their names, labels, directions and invariances (:data:`CATALOGUE`, :func:`measure_catalogue`),
names checked (:func:`check_measure_names`), and the memory a computation's features take
(:func:`check_feature_budget`).

The registry that computes (:data:`core.similarity.measures.MEASURES`) imports torch, which the
dashboard's process never loads (its worker computes); so the words live here and the registry
attaches each index's function to its entry by name (it refuses to import if the two differ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["CATALOGUE", "MeasureInfo", "TRANSFORMS",
           "FEATURE_BUDGET", "check_feature_budget", "check_measure_names", "feature_bytes", "measure_catalogue",
           "most_images"]

# Features of every image at every layer, float32 on the CPU, held while the measures run: 4 GiB
# holds 8,594 images of the default layers of ResNet-1111 vs ResNet-2222 (0.5 MB an image),
# and leaves room on a 16 GB laptop for the measures' own working memory on top.
FEATURE_BUDGET = 4 * 2**30

# What an index may be unchanged by, applied to one layer's features (n, p) (or, for the last two,
# to both sides): x Q with Q orthogonal; c x with c > 0; x + b for one vector b; x A with A any
# invertible matrix; the examples reordered alike on both sides; the two layers swapped.
TRANSFORMS = ("rotation", "isotropic scaling", "shift", "invertible linear map", "example order", "swap")
_GEOMETRY = ("rotation", "isotropic scaling", "shift", "example order")  # of the examples' point cloud


@dataclass(frozen=True)
class MeasureInfo:
    name: str  # the CLI's and the URL's spelling
    label: str  # the page's
    higher_is_similar: bool
    summary: str  # one line: what it compares
    invariances: tuple[str, ...] = ()  # members of TRANSFORMS that leave the index unchanged
    streamed: bool = False  # True: an estimator exists that folds in the examples batch by batch


CATALOGUE: dict[str, MeasureInfo] = {m.name: m for m in [
    MeasureInfo("linear-cka", "Linear CKA", True, "centred kernel alignment of the linear kernels",
                (*_GEOMETRY, "swap"), streamed=True),
    MeasureInfo("rbf-cka", "RBF CKA", True, "centred kernel alignment of RBF kernels (bandwidth 0.8 x median "
                "distance)", (*_GEOMETRY, "swap"), streamed=True),
    MeasureInfo("svcca", "SVCCA", True, "mean canonical correlation of the top principal directions (99 % of the "
                "variance, at most n/10)", (*_GEOMETRY, "swap")),
    MeasureInfo("pwcca", "PWCCA", True, "canonical correlations of the same directions, weighted by how much of the "
                "row layer's neurons each holds", ("isotropic scaling", "shift", "example order")),
    MeasureInfo("procrustes", "Procrustes distance", False, "residual of the best rotation between the centred, "
                "unit-norm features (0 = the same up to rotation)", (*_GEOMETRY, "swap")),
    MeasureInfo("rsa", "RSA", True, "Spearman correlation of the two layers' Euclidean distances between examples",
                (*_GEOMETRY, "swap")),
    MeasureInfo("linear-encoding", "Linear encoding (R²)", True, "held-out R² of ridge regression from the row layer "
                "to the column layer", ("rotation", "isotropic scaling", "shift")),
]}


def measure_catalogue() -> dict[str, dict]:
    """``{name: {"label", "higher_is_similar", "summary"}}`` of every measure, in the registry's order."""
    return {name: {k: v for k, v in asdict(info).items() if k in ("label", "higher_is_similar", "summary")}
            for name, info in CATALOGUE.items()}


def check_measure_names(names: Sequence[str]) -> list[str]:
    """The names, each once, in the order given; one line naming an unknown one and the known ones."""
    if isinstance(names, str):
        raise TypeError(f"measures are a list of names, e.g. [{names!r}], not a string")
    known = measure_catalogue()
    names = list(dict.fromkeys(names))  # a name given twice is computed once
    if not names:
        raise ValueError(f"name at least one similarity measure: {', '.join(known)}")
    for name in names:
        if name not in known:
            raise ValueError(f"unknown similarity measure {name!r}: choose from {', '.join(known)}")
    return names


def feature_bytes(n_images: int, shapes_a: Sequence[Sequence[int]], shapes_b: Sequence[Sequence[int]]) -> int:
    """Bytes of float32 features of ``n_images`` at layers of these per-image shapes (both sides;
    a layer the two sides share is counted on both: pass it once where it is one tensor)."""
    per_image = sum(math.prod(shape) for shape in [*shapes_a, *shapes_b])
    return 4 * n_images * per_image


def most_images(shapes_a: Sequence[Sequence[int]], shapes_b: Sequence[Sequence[int]],
                budget: int = FEATURE_BUDGET) -> int:
    """The most images whose features fit ``budget`` bytes."""
    return budget // max(1, feature_bytes(1, shapes_a, shapes_b))


def check_feature_budget(n_images: int, shapes_a: Sequence[Sequence[int]], shapes_b: Sequence[Sequence[int]],
                         budget: int = FEATURE_BUDGET) -> int:
    """The bytes of features (:func:`feature_bytes`); one line naming the most images that fit
    when they exceed ``budget``."""
    need = feature_bytes(n_images, shapes_a, shapes_b)
    if need > budget:
        raise ValueError(f"{n_images:,} images of these layers need {_size(need)} of features held at once, more than "
                         f"the {_size(budget)} budget; use at most {most_images(shapes_a, shapes_b, budget):,} "
                         f"images, or fewer layers")
    return need


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 2**10:.0f} KiB"
