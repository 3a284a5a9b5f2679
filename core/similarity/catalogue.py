"""What a page needs to know about the similarity measures before anything runs, without torch:
their names, labels and directions (:func:`measure_catalogue`), names checked
(:func:`check_measure_names`), and the memory a computation's features take
(:func:`check_feature_budget`).

The registry itself (:data:`core.similarity.measures.MEASURES`) imports torch, which the
dashboard's process never loads (its worker computes). So where torch is not loaded yet, the
catalogue is read once from a short-lived interpreter that imports the registry; where it is
(the worker, the CLI, a notebook, the tests) the registry is read directly. Either way the
catalogue is the registry's, so an index added there shows up on the page with no edit here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence

from core.paths import PROJECT_ROOT

__all__ = ["FEATURE_BUDGET", "check_feature_budget", "check_measure_names", "feature_bytes", "measure_catalogue",
           "most_images"]

# Features of every image at every layer, float32 on the CPU, held while the measures run: 4 GiB
# holds 8,594 images of the default layers of ResNet-1111 vs ResNet-2222 (0.5 MB an image),
# and leaves room on a 16 GB laptop for the measures' own working memory on top.
FEATURE_BUDGET = 4 * 2**30

_ASK = ("import json; from core.similarity.measures import MEASURES; print(json.dumps({m.name: {'label': m.label, "
        "'higher_is_similar': m.higher_is_similar, 'summary': m.summary} for m in MEASURES.values()}))")


def measure_catalogue() -> dict[str, dict]:
    """``{name: {"label", "higher_is_similar", "summary"}}`` of every registered measure, in the
    registry's order."""
    if "torch" in sys.modules:
        return _from_registry()
    return _from_a_fresh_interpreter()


def _from_registry() -> dict[str, dict]:
    from core.similarity.measures import MEASURES

    return {m.name: {"label": m.label, "higher_is_similar": m.higher_is_similar, "summary": m.summary}
            for m in MEASURES.values()}


@functools.lru_cache(maxsize=1)
def _from_a_fresh_interpreter() -> dict[str, dict]:
    """Once per process (about 1.5 s on 2 idle CPU cores: the interpreter imports torch); a failure
    is not remembered, so the next call tries again."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                       os.environ.get("PYTHONPATH")]))}
    try:
        out = subprocess.run([sys.executable, "-c", _ASK], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    except subprocess.TimeoutExpired:
        raise RuntimeError("could not list the similarity measures (importing their registry took over 60 s); "
                           "reload the page") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"could not list the similarity measures ({last})")
    return json.loads(out.stdout)


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
