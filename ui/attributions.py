"""What the Attributions page asks the worker for and reads back: the receiver's predictions on
the test set (to browse images), and attribution maps of sender, receiver and stitched network.
Nothing here computes: each is a stored run (:mod:`core.runs.analysis`) found or queued through
:mod:`core.runs.service`; an upload is decoded here (Pillow, small) and sent as pixels."""

from __future__ import annotations

import functools
import io
import re
import warnings

import numpy as np

from core import runs
from core.runs import bundled
from core.runs.analysis import attributions_config, predictions_config

from .grids import grids_of_pair, run_label  # noqa: F401 - run_label: in ui.grids, for the CKA and Runs pages too
from .state import store

# Datasets of light objects on a black background: a photo of a dark object on a light one is
# their negative, and networks trained on them read it as such.
LIGHT_ON_BLACK = {"fashion-mnist"}
POLARITY_NOTE = ("Fashion-MNIST's pictures are light garments on a black background: the networks see a dark "
                 "object on a light background as a negative, so invert such a picture.")
PNG_DPI = 150  # the figure is drawn 820 px wide at 100 dpi: exported 1.5 times larger, about 1,230 px, for a slide


def stored(kind: str, config: dict):
    """The stored result of ``kind`` for ``config``, or None."""
    run = runs.find(store(), kind, config)
    return None if run is None else runs.load(store(), run["id"])


def scoring_failure(config: dict) -> str | None:
    """Why the receiver's last scoring on the test set failed (one line), or None; its job's
    own error is then not shown a second time."""
    run = runs.find(store(), "predictions", config, statuses=None)
    if run is None or run["status"] != "failed":
        return None
    import streamlit as st

    # Shown here, persistently: the job's error (shown once by ui.jobs) would say the same.
    st.session_state["job_errors"] = [j for j in st.session_state.get("job_errors", [])
                                      if not (j["kind"] == "predictions" and config in j["params"]["configs"])]
    # The run's message starts with the exception's type (for the Runs page); the reason is what follows.
    return re.sub(r"^[A-Za-z]\w*(Error|Exception): ", "", run.get("message") or "") or "unknown error"


def stitched_grids(sender: str, receiver: str) -> list[dict]:
    """The pair's grids (newest first, finished or cancelled) whose stitches are stored: a bundled
    grid (:mod:`core.runs.bundled`) carries accuracies only, no stitch to explain."""
    return [r for r in grids_of_pair(sender, receiver, statuses=("done", "cancelled")) if not bundled.provenance(r)]


def preselected(grids: list[dict], wanted: str | None) -> int:
    """The run to show first: the one a link names, else the newest of the real networks (a
    random control answers another question), else the newest."""
    ids = [r["id"] for r in grids]
    if wanted in ids:
        return ids.index(wanted)
    return next((k for k, r in enumerate(grids) if r["config"].get("control", "none") == "none"), 0)


def predictions(receiver: str, dataset: str) -> tuple[dict, dict | None]:
    """(config, stored ``{"labels", "predictions"}`` or None) for browsing the test set."""
    config = predictions_config(receiver, dataset)
    return config, stored("predictions", config)


def browse(labels: np.ndarray, predictions: np.ndarray, label: int | None, which: str) -> np.ndarray:
    """Indices of test images of class ``label`` (None: any), all / correctly / wrongly classified."""
    keep = np.ones(len(labels), dtype=bool) if label is None else labels == label
    if which == "correct":
        keep &= predictions == labels
    elif which == "wrong":
        keep &= predictions != labels
    return np.flatnonzero(keep)


def uploaded_pixels(data: bytes, shape: tuple[int, int, int]) -> list:
    """An uploaded picture as ``(C, H, W)`` values in 0..255 at the dataset's size and channels;
    ``ValueError`` with one sentence if it is not a picture."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # a damaged file's EXIF warning is not the user's message
            warnings.simplefilter("ignore")
            picture = Image.open(io.BytesIO(data))
            picture.load()
            picture = picture.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]))
    except Image.DecompressionBombError:
        raise ValueError("that image is far too large to be a photo (over Pillow's decompression-bomb limit); "
                         "upload a PNG or JPEG of at most a few thousand pixels a side") from None
    except Exception:  # noqa: BLE001 - Pillow fails on foreign or damaged bytes in many ways (OSError, SyntaxError,
        # ValueError, struct.error, ...) and its texts name internals (<_io.BytesIO object at 0x...>, chunk bytes)
        raise ValueError("that file is not a picture StitchLab can read; upload a PNG or JPEG") from None
    array = np.asarray(picture, dtype=np.uint8)
    array = array[None] if shape[0] == 1 else array.transpose(2, 0, 1)
    return array.tolist()


def looks_inverted(pixels: list) -> str | None:
    """Why ``pixels`` (``(C, H, W)`` in 0..255) look dark on light, or None: the border brighter
    than the centre (a light background), or a picture brighter than mid-grey overall."""
    image = np.asarray(pixels, dtype=np.float32).mean(0) / 255.0  # (H, W), grey
    height, width = image.shape
    ring = max(1, min(height, width) // 8)  # 4 px of a 32-px picture
    border = np.ones_like(image, dtype=bool)
    border[ring:-ring, ring:-ring] = False
    centre = image[height // 4:height - height // 4, width // 4:width - width // 4]
    if image[border].mean() > centre.mean() + 0.05:  # clearly brighter: a flat picture has no background
        return f"its border is brighter than its centre ({image[border].mean():.2f} against {centre.mean():.2f})"
    if image.mean() > 0.5:
        return f"it is mostly bright (mean brightness {image.mean():.2f} of 1)"
    return None


def inverted(pixels: list) -> list:
    """The picture's negative (``255 - value``), in the same ``(C, H, W)`` list form."""
    return (255 - np.asarray(pixels, dtype=np.int64)).tolist()


def attribution_request(sender: str, receiver: str, dataset: str, method: str, index: int | None,
                        pixels: list | None, run_id: str | None, cell: tuple[str, str] | None,
                        use_true_label: bool) -> dict:
    return attributions_config(sender, receiver, dataset, method, index, pixels, run_id,
                               list(cell) if run_id and cell else None, use_true_label)


def figure(result: dict, dataset: str):
    """The stored attributions as a matplotlib figure (no torch)."""
    from core.attribution.maps import Attribution, attribution_figure
    from core.data.classes import classes

    maps = {key: Attribution.from_json(value) for key, value in result["results"].items()}
    image = np.asarray(result["image"], dtype=np.float32) / 255.0
    return attribution_figure(image, maps, classes(dataset, 10), result["true_label"])


def figure_png(fig, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG bytes, cropped to what it draws (as ``st.pyplot`` shows it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def gallery_images(dataset: str) -> np.ndarray | None:
    """The test split's pixels (uint8 ``(N, C, H, W)``) for the gallery, or None when they cannot
    be read here (an image folder, or files not fetched yet): the slider still picks an image."""
    try:
        return _test_split(dataset)
    except (FileNotFoundError, ValueError):
        return None  # and not cached: the worker may fetch the files later


@functools.lru_cache(maxsize=2)  # read once per process (0.1 s for 10,000 images) and shared by every session
def _test_split(dataset: str) -> np.ndarray:
    from core.data.pixels import load_test_images

    images = load_test_images(dataset)
    images.flags.writeable = False  # one array shared by every session
    return images
