"""Datasets, loaded once into uint8 tensors and served in batches on any device.

Names:

* ``fashion-mnist``: from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), else downloaded by torchvision into
  ``$STITCHLAB_HOME/data``. Served at 1x32x32: the 28x28 images are zero-padded by 2 pixels,
  as the bundled zoo was trained, so the small ResNets' stages run at 32, 16, 8, 4 pixels.
* ``cifar10``: torchvision's CIFAR-10 loader (downloads when online), 3x32x32.
* ``folder:PATH``: a user's images in torchvision's ImageFolder layout (one subfolder per
  class; ``PATH/train`` and ``PATH/test`` when the user has splits), resized to 3x32x32.

Whole datasets fit in memory as uint8 (Fashion-MNIST: 60k x 1 x 32 x 32 = 61 MB), which lets
a training loop keep them on the GPU and draw batches without a DataLoader.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.datasets.utils import extract_archive

from core import paths
from core.data.classes import CLASSES
from core.paths import DEBIAN_FASHION_MNIST

__all__ = ["DatasetInfo", "ImageSet", "load_dataset", "list_datasets", "DEBIAN_FASHION_MNIST"]



@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its classes, the shape it is served at, and its pixel statistics."""

    name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W) as served
    mean: tuple[float, ...]  # per channel, of images in [0, 1]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


FASHION_MNIST = DatasetInfo(
    "fashion-mnist", CLASSES["fashion-mnist"], (1, 32, 32),
    # Statistics of the padded 32x32 training images (the 28x28 ones have 0.2860 / 0.3530).
    (0.2190,), (0.3318,))
CIFAR10 = DatasetInfo(
    "cifar10", CLASSES["cifar10"], (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass
class ImageSet:
    """Images as uint8 ``(N, C, H, W)`` and labels as int64 ``(N,)``, with what they are."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> ImageSet:
        """The first ``limit`` examples (all when ``limit`` is None)."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise ValueError(f"limit must be a positive number of examples, got {limit}")
        return replace(self, images=self.images[:limit], labels=self.labels[:limit])

    def to(self, device) -> ImageSet:
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def batches(self, batch_size: int, device=None, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield ``(images, labels)`` with images as float32 in [0, 1] on ``device``.

        With ``shuffle``, the order is a permutation drawn from ``generator`` (on the CPU, so
        the same seed gives the same order on every device). The last batch may be smaller.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.images.device) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                idx = slice(start, start + batch_size)
                images, labels = self.images[idx], self.labels[idx]
            else:
                idx = order[start:start + batch_size]
                images, labels = self.images[idx], self.labels[idx]
            images = images.to(device, non_blocking=True).float().div_(255.0)
            yield images, labels.to(device, non_blocking=True)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=self.info.num_classes).tolist()


def list_datasets() -> list[str]:
    return ["fashion-mnist", "cifar10", "folder:PATH"]


def load_dataset(name: str, split: str = "test", limit: int | None = None, download: bool = True) -> ImageSet:
    """Load a dataset split (``"train"`` or ``"test"``) as an :class:`ImageSet`.

    Example::

        >>> test = load_dataset("fashion-mnist", "test", limit=1000)
        >>> test.images.shape
        torch.Size([1000, 1, 32, 32])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _load_cached(name, split, download).head(limit)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, download: bool) -> ImageSet:
    if name == "fashion-mnist":
        return _fashion_mnist(split, download)
    if name == "cifar10":
        return _cifar10(split, download)
    if name.startswith("folder:"):
        return _image_folder(Path(name[len("folder:"):]).expanduser(), split)
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(list_datasets())}")


def _fashion_mnist(split: str, download: bool) -> ImageSet:
    root = paths.data_dir()
    raw = root / "FashionMNIST" / "raw"
    _unpack_debian_fashion_mnist(raw)
    try:
        ds = torchvision.datasets.FashionMNIST(root, train=(split == "train"), download=False)
    except RuntimeError:
        if not download:
            raise FileNotFoundError(_fashion_mnist_missing(root)) from None
        try:
            ds = torchvision.datasets.FashionMNIST(root, train=(split == "train"), download=True)
        except Exception as exc:  # network errors come in many types
            raise FileNotFoundError(_fashion_mnist_missing(root) + f" (download failed: {exc})") from None
    images = F.pad(ds.data.unsqueeze(1), (2, 2, 2, 2))  # (N, 1, 28, 28) -> (N, 1, 32, 32)
    return ImageSet(images.contiguous(), ds.targets.long(), FASHION_MNIST, split)


def _unpack_debian_fashion_mnist(raw: Path) -> None:
    """Decompress Debian's IDX files into the layout torchvision's loader reads.

    torchvision reads uncompressed IDX files from ``FashionMNIST/raw``; Debian ships them
    gzipped, and recompressed (so torchvision's md5 of the upstream archives does not apply);
    torchvision's IDX reader checks each file's magic number and sizes when it loads it.
    """
    if not DEBIAN_FASHION_MNIST.is_dir():
        return
    for filename, _ in torchvision.datasets.FashionMNIST.resources:
        target = raw / filename[:-len(".gz")]
        source = DEBIAN_FASHION_MNIST / filename
        if target.exists() or not source.exists():
            continue
        # Unpack into a scratch folder first so an interrupted unpack never leaves a
        # truncated file where torchvision looks.
        # (a folder of its own per process, so concurrent first loads do not collide)
        raw.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=raw, prefix=".partial-"))
        try:
            extract_archive(str(source), str(partial))
            os.replace(partial / target.name, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def _fashion_mnist_missing(root: Path) -> str:
    return (f"Fashion-MNIST not found. Either install Debian's package "
            f"(sudo apt-get install dataset-fashion-mnist, which puts it in {DEBIAN_FASHION_MNIST}), "
            f"or let torchvision download it into {root} (needs internet)")


def _cifar10(split: str, download: bool) -> ImageSet:
    root = paths.data_dir()
    try:
        ds = torchvision.datasets.CIFAR10(root, train=(split == "train"), download=download)
    except Exception as exc:
        raise FileNotFoundError(
            # a URLError's own text is a repr (<urlopen error ...>); its reason is the sentence
            f"CIFAR-10 not found in {root} and could not be downloaded ({getattr(exc, 'reason', exc)}); "
            f"connect to the internet once, or place cifar-10-batches-py in {root}") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.long), CIFAR10, split)


# PIL's own limit (Image.MAX_IMAGE_PIXELS, 89 M pixels): over it PIL only warns and decodes anyway;
# over twice it raises an error that is no OSError. A folder's images are shrunk to 32 x 32, so
# one larger than this is a mistake or a decompression bomb: refused from its header, undecoded.
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_FOLDER_IMAGES = 100_000  # held in memory as uint8: 3 x 32 x 32 bytes each, 300 MB at most
IMG_EXTENSIONS = torchvision.datasets.folder.IMG_EXTENSIONS


def _open_image(path: str, size: int):
    """One image of a folder, as RGB; a huge or unreadable one is a ``ValueError`` naming its file."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, by size
            with open(path, "rb") as file:
                image = Image.open(file)  # reads the header only
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"image {path} is {width:,} x {height:,} pixels, over the {MAX_IMAGE_PIXELS:,} "
                                     f"pixels one image may have: shrink it or take it out of the folder")
                image.draft("RGB", (size, size))  # JPEG: decode at a fraction of the size, when it can
                return image.convert("RGB")
    except Image.DecompressionBombError:
        raise ValueError(f"image {path} has far more than the {MAX_IMAGE_PIXELS:,} pixels one image may have: "
                         f"shrink it or take it out of the folder") from None
    except (OSError, SyntaxError, Image.UnidentifiedImageError) as exc:  # SyntaxError: PIL's word for a bad header
        raise ValueError(f"image {path} cannot be read ({exc}): replace it or take it out of the folder") from None


def _image_folder(path: Path, split: str, size: int = 32) -> ImageSet:
    folder = path / split if (path / "train").is_dir() and (path / "test").is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist: give folder:PATH with one subfolder per class")
    classes, samples = _folder_samples(folder)
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Resize((size, size)),
        torchvision.transforms.PILToTensor(),
    ])
    images = torch.stack([transform(_open_image(file, size)) for file, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    mean = tuple((images.float() / 255).mean(dim=(0, 2, 3)).tolist())
    std = tuple((images.float() / 255).std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    info = DatasetInfo(f"folder:{path}", tuple(classes), (3, size, size), mean, std)
    return ImageSet(images, labels, info, split)


def _folder_samples(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, [(image file, class index), ...])`` in torchvision's ImageFolder layout and
    order (one subfolder per class, images at any depth below it), found without following
    links inside a class (ImageFolder does, and a link to a parent folder walks forever) and
    refused past :data:`MAX_FOLDER_IMAGES` images."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} holds no class subfolders: put each class's images in a subfolder named "
                                f"after the class")
    samples, empty = [], []
    for index, name in enumerate(classes):
        found, before = [], len(samples)
        count = before
        for root, _, files in os.walk(folder / name):
            images = sorted(file for file in files if file.lower().endswith(IMG_EXTENSIONS))
            found.append((root, images))
            count += len(images)
            if count > MAX_FOLDER_IMAGES:
                raise ValueError(f"{folder} holds more than {MAX_FOLDER_IMAGES:,} images: give a folder of at most "
                                 f"that many (its images are held in memory), e.g. a sample of each class")
        samples += [(os.path.join(root, file), index) for root, images in sorted(found) for file in images]
        if len(samples) == before:
            empty.append(name)
    if empty:
        raise FileNotFoundError(f"{folder} holds no images in class subfolder(s) {', '.join(empty[:5])}: add images "
                                f"({', '.join(IMG_EXTENSIONS)}) or remove the subfolder")
    return classes, samples
