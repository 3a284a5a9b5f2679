"""What the Attributions page computes: test images to browse, the receiver's predictions on
them, and captum attributions of sender, receiver and stitched network (cached per choice)."""

from __future__ import annotations

import io

import numpy as np
import streamlit as st

from .state import store


@st.cache_resource(show_spinner="Loading the test images…")
def _test_set(dataset: str):
    from core.data import load_dataset

    return load_dataset(dataset, "test")


@st.cache_data(show_spinner="Scoring the receiver on the test set…", max_entries=16)
def test_labels_and_predictions(receiver: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from core.grid import cached_model

    data, net = _test_set(dataset), cached_model(receiver, "cpu")
    predictions = []
    with torch.no_grad():
        for images, _ in data.batches(256, "cpu"):
            predictions.append(net(images).argmax(-1))
    return data.labels.numpy(), torch.cat(predictions).numpy()


def browse(labels: np.ndarray, predictions: np.ndarray, label: int | None, which: str) -> np.ndarray:
    """Indices of test images of class ``label`` (None: any), all / correctly / wrongly classified."""
    keep = np.ones(len(labels), dtype=bool) if label is None else labels == label
    if which == "correct":
        keep &= predictions == labels
    elif which == "wrong":
        keep &= predictions != labels
    return np.flatnonzero(keep)


def uploaded_image(data: bytes, dataset: str):
    """An uploaded picture as a (1, C, H, W) tensor in [0, 1] at the dataset's size and channels."""
    import torch
    from PIL import Image, UnidentifiedImageError

    shape = _test_set(dataset).info.image_shape
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except Image.DecompressionBombError:
        raise ValueError("that image is far too large to be a photo (over Pillow's decompression-bomb limit); "
                         "upload a PNG or JPEG of at most a few thousand pixels a side") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"that file is not an image StitchLab can read ({exc}); upload a PNG or JPEG") from None
    picture = picture.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]))
    array = np.asarray(picture, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    return (tensor[None, None] if shape[0] == 1 else tensor.permute(2, 0, 1)[None]).contiguous()


@st.cache_data(show_spinner="Computing attributions…", max_entries=64)
def attributions(sender: str, receiver: str, run_id: str | None, cell: tuple[str, str] | None, dataset: str,
                 index: int | None, upload: bytes | None, method: str, use_true_label: bool):
    """``(image, results, true label)`` for one image: results maps sender/receiver/stitched to
    :class:`core.attribution.Attribution`."""
    import torch

    from core.attribution import compare
    from core.grid import cached_model
    from core.stitched import load_stitched

    if upload is not None:
        image, true_label = uploaded_image(upload, dataset), None
    else:
        data = _test_set(dataset)
        image, true_label = data.images[index:index + 1].float() / 255.0, int(data.labels[index])
    stitched = load_stitched(store(), run_id, *cell) if run_id and cell else None
    target = torch.tensor([true_label]) if use_true_label and true_label is not None else None
    # A black baseline for the path methods: on Fashion-MNIST the mean image would make the
    # empty padding look important.
    extra = {"baseline": 0.0} if method in ("ig", "gradientshap") else {}
    results = compare(cached_model(sender, "cpu"), cached_model(receiver, "cpu"), stitched, image, target=target,
                      method=method, **extra)
    return image[0], results, true_label


def figure(image, results, dataset: str, true_label):
    from core.attribution import attribution_figure
    from core.data_info import classes

    return attribution_figure(image, results, classes(dataset, 10), true_label)
