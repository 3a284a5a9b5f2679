"""Class names of the datasets StitchLab knows, without importing torch (for drawing results)."""

from __future__ import annotations

CLASSES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def classes(dataset: str, n: int | None = None) -> tuple[str, ...]:
    """The class names of ``dataset``; for a dataset of the user's, ``class 0``, ``class 1``, ..."""
    if dataset in CLASSES:
        return CLASSES[dataset]
    return tuple(f"class {k}" for k in range(n or 0))
