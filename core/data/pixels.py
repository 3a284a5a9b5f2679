"""A dataset's test images as a numpy array, read without torch: the pages show thumbnails of
the test set, and ``ui/`` and ``pages/`` never import torch (the worker owns it).

The images come in the order and at the size :func:`core.data.datasets.load_dataset` serves
them (Fashion-MNIST zero-padded from 28 to 32 pixels), so a position here is the same test
image index the worker explains.

Example::

    >>> load_test_images("fashion-mnist").shape
    (10000, 1, 32, 32)
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from core import paths
from core.paths import DEBIAN_FASHION_MNIST

__all__ = ["load_test_images", "DEBIAN_FASHION_MNIST"]

_IDX_IMAGES = 2051  # the IDX magic number of a uint8 image file with three dimensions
_PADDING = 2  # 28 -> 32 pixels, as the networks were trained


def load_test_images(dataset: str) -> np.ndarray:
    """The test split of ``dataset`` as uint8 ``(N, C, H, W)``.

    ``FileNotFoundError`` (one sentence) when the files are not on this machine yet (the worker
    fetches them the first time it scores a network); ``ValueError`` for a dataset this reader
    does not know (an image folder: its images are only decoded by the worker)."""
    if dataset == "fashion-mnist":
        return _fashion_mnist_test()
    if dataset == "cifar10":
        return _cifar10_test()
    raise ValueError(f"no torch-free reader for {dataset!r}: test images can be read for fashion-mnist and cifar10")


def _fashion_mnist_test() -> np.ndarray:
    name = "t10k-images-idx3-ubyte"
    raw = paths.data_dir() / "FashionMNIST" / "raw"
    for path in (raw / name, DEBIAN_FASHION_MNIST / f"{name}.gz", raw / f"{name}.gz"):
        if path.is_file():
            images = _read_idx_images(path)
            return np.pad(images[:, None], ((0, 0), (0, 0), (_PADDING, _PADDING), (_PADDING, _PADDING)))
    raise FileNotFoundError(f"Fashion-MNIST's test images are neither in {DEBIAN_FASHION_MNIST} nor in {raw}")


def _read_idx_images(path: Path) -> np.ndarray:
    """An IDX image file (gzipped or not) as uint8 ``(N, H, W)``; its header is checked."""
    data = (gzip.decompress if path.suffix == ".gz" else bytes)(path.read_bytes())
    magic, count, height, width = np.frombuffer(data[:16], dtype=">i4")
    if magic != _IDX_IMAGES or len(data) != 16 + count * height * width:
        raise ValueError(f"{path} is not an IDX image file (magic {magic}, {len(data)} bytes); delete it so that "
                         "it is fetched again")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, height, width)


def _cifar10_test() -> np.ndarray:
    path = paths.data_dir() / "cifar-10-batches-py" / "test_batch"
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10's test images are not in {path.parent}")
    # The archive torchvision downloads and reads the same way: a pickled dict of numpy arrays.
    with path.open("rb") as file:
        batch = pickle.load(file, encoding="latin1")  # noqa: S301 - the dataset's own format, in our data folder
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows of 3072 = 3 x 32 x 32
