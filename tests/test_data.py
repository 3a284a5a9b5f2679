import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from core.data import datasets as data
from core.data.datasets import load_dataset


def test_fashion_mnist_is_served_padded_to_32(home):
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10_000, 1, 32, 32) and test.images.dtype == torch.uint8
    assert test.class_counts() == [1000] * 10
    assert test.images[:, :, :2].max() == 0  # the 2-pixel frame is padding
    x = test.images.float() / 255
    assert abs(x.mean().item() - test.info.mean[0]) < 0.01 and abs(x.std().item() - test.info.std[0]) < 0.01


def test_head_and_batches():
    test = load_dataset("fashion-mnist", "test", limit=100)
    assert len(test) == 100
    batches = list(test.batches(32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert 0.0 <= batches[0][0].min() and batches[0][0].max() <= 1.0
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = [y for _, y in test.batches(32, shuffle=True, generator=g1)]
    b = [y for _, y in test.batches(32, shuffle=True, generator=g2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_missing_fashion_mnist_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("STITCHLAB_HOME", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    data._load_cached.cache_clear()
    try:
        with pytest.raises(FileNotFoundError) as info:
            load_dataset("fashion-mnist", "test", download=False)
    finally:
        data._load_cached.cache_clear()
    assert "apt-get install dataset-fashion-mnist" in str(info.value) and "download" in str(info.value)


def _write_tiny_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 6), ("data_batch_2", 4), ("data_batch_3", 2), ("data_batch_4", 2),
                    ("data_batch_5", 2), ("test_batch", 5)]:
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10.classes)}, f)


def test_cifar10_through_torchvisions_loader(monkeypatch, tmp_path):
    monkeypatch.setenv("STITCHLAB_HOME", str(tmp_path))
    _write_tiny_cifar(tmp_path / "data")
    # torchvision checks the md5 of the real archive's files; ours are tiny stand-ins.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    data._load_cached.cache_clear()
    try:
        train = load_dataset("cifar10", "train", download=False)
        test = load_dataset("cifar10", "test", download=False)
    finally:
        data._load_cached.cache_clear()
    assert train.images.shape == (16, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    assert test.labels.tolist() == [0, 1, 2, 3, 4]


def test_image_folder(tmp_path):
    for split in ("train", "test"):
        for k, cls in enumerate(["cat", "dog"]):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + i, 30), color=(k * 200, 50, i * 40)).save(tmp_path / split / cls / f"{i}.png")
    data._load_cached.cache_clear()
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert test.images.shape == (6, 3, 32, 32) and test.info.classes == ("cat", "dog")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}", "test")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'mnist2'"):
        load_dataset("mnist2")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("fashion-mnist", "val")
