"""What the Attributions page asks the worker for and reads back: the receiver's predictions on
the test set (to browse images), and attribution maps of sender, receiver and stitched network.
Nothing here computes: each is a stored run (:mod:`core.runs.analysis`) found or queued through
:mod:`core.runs.service`; an upload is decoded here (Pillow, small) and sent as pixels."""

from __future__ import annotations

import io

import numpy as np

from core import runs
from core.runs.analysis import attributions_config, predictions_config

from .state import store


def stored(kind: str, config: dict):
    """The stored result of ``kind`` for ``config``, or None."""
    run = runs.find(store(), kind, config)
    return None if run is None else runs.load(store(), run["id"])


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
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except Image.DecompressionBombError:
        raise ValueError("that image is far too large to be a photo (over Pillow's decompression-bomb limit); "
                         "upload a PNG or JPEG of at most a few thousand pixels a side") from None
    except (UnidentifiedImageError, OSError):
        raise ValueError("that file is not a picture StitchLab can read; upload a PNG or JPEG") from None
    picture = picture.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]))
    array = np.asarray(picture, dtype=np.uint8)
    array = array[None] if shape[0] == 1 else array.transpose(2, 0, 1)
    return array.tolist()


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
