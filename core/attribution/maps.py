r"""Attribution maps as data: what a method found, apart from computing it (no torch here).

The job worker computes :class:`Attribution`\ s with :mod:`core.attribution.methods` (captum) and
stores them as JSON (:meth:`Attribution.to_json`); the dashboard reads them back
(:meth:`Attribution.from_json`) and draws :func:`attribution_figure` without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["METHODS", "METHOD_LABELS", "SIGNED", "Attribution", "attribution_figure"]

METHODS = ("ig", "saliency", "gradientshap", "occlusion", "gradcam")
METHOD_LABELS = {"ig": "Integrated Gradients", "saliency": "Saliency", "gradientshap": "GradientShap",
                 "occlusion": "Occlusion", "gradcam": "Grad-CAM"}
SIGNED = {"ig": True, "saliency": False, "gradientshap": True, "occlusion": True, "gradcam": False}


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


def attribution_figure(image, results: dict[str, Attribution], classes=None, true_label=None, index: int = 0):
    """A matplotlib Figure (no pyplot): the input image (``(C, H, W)`` in [0, 1], a tensor or an
    array), then one panel per attribution, titled with the network's name, predicted class and
    probability, with a colour bar."""
    from matplotlib.figure import Figure

    def class_name(k: int) -> str:
        return classes[k] if classes is not None and 0 <= k < len(classes) else f"class {k}"

    picture = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    picture = picture.mean(0) if picture.shape[0] != 3 else picture.transpose(1, 2, 0)  # (H, W) or (H, W, 3)
    gray = picture.mean(-1) if picture.ndim == 3 else picture
    fig = Figure(figsize=(3.2 * (1 + len(results)), 3.6), dpi=100)
    axes = fig.subplots(1, 1 + len(results), squeeze=False)[0]
    axes[0].imshow(picture, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input" + (f": {class_name(int(true_label))}" if true_label is not None else ""), fontsize=9)
    for ax, (key, result) in zip(axes[1:], results.items()):
        k = int(result.predictions[index])
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
        shown = ax.imshow(result.display[index], cmap="bwr" if result.signed else "inferno",
                          vmin=-1 if result.signed else 0, vmax=1, alpha=0.65)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        title = f"{key}: {result.name}" if key not in result.name else result.name
        ax.set_title(f"{title}\n{class_name(k)} ({result.probabilities[index, k]:.0%}) · target "
                     f"{class_name(int(result.target[index]))}", fontsize=7, wrap=True)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(METHOD_LABELS[next(iter(results.values())).method] if results else "", fontsize=10)
    fig.tight_layout()
    return fig
