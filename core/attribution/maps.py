r"""Attribution maps as data: what a method found, apart from computing it (no torch here).

The job worker computes :class:`Attribution`\ s with :mod:`core.attribution.methods` (captum) and
stores them as JSON (:meth:`Attribution.to_json`); the dashboard reads them back
(:meth:`Attribution.from_json`) and draws :func:`attribution_figure` without importing torch.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np

__all__ = ["METHODS", "METHOD_LABELS", "SIGNED", "Attribution", "attribution_figure"]

METHODS = ("ig", "saliency", "gradientshap", "occlusion", "gradcam")
METHOD_LABELS = {"ig": "Integrated Gradients", "saliency": "Saliency", "gradientshap": "GradientShap",
                 "occlusion": "Occlusion", "gradcam": "Grad-CAM"}
SIGNED = {"ig": True, "saliency": False, "gradientshap": True, "occlusion": True, "gradcam": False}
SHOWN_WIDTH = 820  # px: st.pyplot stretches a figure to the page's main area, this wide in a 1280-px window
_DPI = 100
_TITLE_PT, _TICK_PT, _SUPTITLE_PT = 9, 8, 11  # at _DPI, shown SHOWN_WIDTH wide: 12.5, 11 and 15 px


@dataclass
class Attribution:
    """One method's attributions for N images.

    ``raw``: ``(N, H, W)`` float32, channels summed, at the resolution of the images given.
    ``display``: ``raw`` scaled per image by the 99th percentile of ``|raw|``, clipped to
    [-1, 1] for signed methods and [0, 1] for unsigned ones (saliency, Grad-CAM).
    ``predictions`` ``(N,)``, ``probabilities`` ``(N, classes)`` and ``target`` ``(N,)`` are
    the network's own; ``delta`` is Integrated Gradients' completeness error per image.
    """

    method: str
    raw: np.ndarray
    display: np.ndarray
    signed: bool
    predictions: np.ndarray
    probabilities: np.ndarray
    target: np.ndarray
    seconds: float
    name: str = ""
    layer: str | None = None
    delta: np.ndarray | None = None

    @property
    def label(self) -> str:
        return METHOD_LABELS[self.method]

    def to_json(self) -> dict:
        """Everything but ``raw`` (the display maps are what is drawn), as lists."""
        return {"method": self.method, "display": np.round(self.display, 4).tolist(), "signed": self.signed,
                "predictions": self.predictions.tolist(), "probabilities": np.round(self.probabilities, 5).tolist(),
                "target": self.target.tolist(), "seconds": self.seconds, "name": self.name, "layer": self.layer,
                "delta": None if self.delta is None else self.delta.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Attribution:
        display = np.asarray(data["display"], dtype=np.float32)
        return cls(data["method"], display, display, data["signed"], np.asarray(data["predictions"]),
                   np.asarray(data["probabilities"], dtype=np.float32), np.asarray(data["target"]), data["seconds"],
                   data["name"], data["layer"], None if data["delta"] is None else np.asarray(data["delta"]))


def _shown_name(key: str, result: Attribution, results: dict[str, Attribution]) -> str:
    """A network's name for its panel. A stitched network's ``sender:layer → receiver:layer`` (see
    :class:`core.engine.stitched.StitchedClassifier`) says ``sender``/``receiver`` instead of the
    networks' names, which their own panels show."""
    parts = result.name.split(" → ")
    if key == "sender" or len(parts) != 2:
        return result.name
    for side, other in enumerate(("sender", "receiver")):
        prefix = f"{results[other].name}:" if other in results and results[other].name else None
        if prefix and parts[side].startswith(prefix):
            parts[side] = f"{other} {parts[side][len(prefix):]}"
    return " → ".join(parts)


def attribution_figure(image, results: dict[str, Attribution], classes=None, true_label=None, index: int = 0,
                       width: int = SHOWN_WIDTH):
    """A matplotlib Figure (no pyplot): the input image (``(C, H, W)`` in [0, 1], a tensor or an
    array), then one panel per attribution, titled with the network's name, predicted class and
    probability, with a colour bar.

    ``width``: the width in px the figure is shown at (``st.pyplot`` stretches it to the page's main
    area, ``SHOWN_WIDTH`` in a 1280-px window). The figure is that many px wide at 100 dpi, so its
    type shows at its size (titles 12.5 px), and each title wraps to its panel's width.
    """
    from matplotlib.figure import Figure

    def class_name(k: int) -> str:
        return classes[k] if classes is not None and 0 <= k < len(classes) else f"class {k}"

    panels = 1 + len(results)
    # Characters a title line may hold: its panel's width over a glyph's (0.6 em), less a margin.
    chars = max(8, int((width / panels - 12) / (0.6 * _TITLE_PT * _DPI / 72)))

    def wrap(*parts: str) -> str:
        return "\n".join(line for part in parts for line in textwrap.wrap(part, chars, break_on_hyphens=False))

    picture = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    picture = picture.mean(0) if picture.shape[0] != 3 else picture.transpose(1, 2, 0)  # (H, W) or (H, W, 3)
    gray = picture.mean(-1) if picture.ndim == 3 else picture
    titles = [wrap("input" + (f": {class_name(int(true_label))}" if true_label is not None else ""))]
    for key, result in results.items():
        k = int(result.predictions[index])
        name = _shown_name(key, result, results)
        titles.append(wrap(*([key] if key not in name else []), name,
                           f"{class_name(k)} ({result.probabilities[index, k]:.0%}) · target "
                           f"{class_name(int(result.target[index]))}"))
    lines = max(title.count("\n") + 1 for title in titles)
    # Square maps about 80 % of a panel wide, the titles' lines above them and the suptitle on top.
    height = 0.8 * width / panels + lines * 1.3 * _TITLE_PT * _DPI / 72 + 60
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(picture, cmap="gray", vmin=0, vmax=1)
    for ax, result in zip(axes[1:], results.values()):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
        shown = ax.imshow(result.display[index], cmap="bwr" if result.signed else "inferno",
                          vmin=-1 if result.signed else 0, vmax=1, alpha=0.65)
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, ticks=[-1, 0, 1] if result.signed else [0, 0.5, 1])
        bar.ax.tick_params(labelsize=_TICK_PT)
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=_TITLE_PT)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(METHOD_LABELS[next(iter(results.values())).method] if results else "", fontsize=_SUPTITLE_PT)
    return fig
