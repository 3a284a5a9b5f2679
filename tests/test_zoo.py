import json

import pytest
import torch

from core.data.datasets import load_dataset
from core.engine.grid import evaluate_network
from core.models import zoo
from core.models.network import cached_model
from core.models.zoo_train import train_zoo

MANIFEST = zoo.read_manifest()
NAMES = [m["name"] for m in MANIFEST["models"]]


def test_the_zoo_has_what_the_lesson_needs():
    assert {"resnet_1111-s0", "resnet_1112-s0", "resnet_1122-s0", "resnet_1222-s0", "resnet_2222-s0",
            "resnet_1111-s1", "resnet_2222-s1", "vgg_small-s0", "mobilenet_v2-s0"} <= set(NAMES)
    total = 0
    for entry in MANIFEST["models"]:
        for key in ("name", "architecture", "config", "dataset", "seed", "epochs", "test_accuracy", "params",
                    "sha256", "command", "device", "file"):
            assert key in entry, (entry["name"], key)
        path = zoo.weights_path(entry)
        assert path.stat().st_size <= 3_000_000 and zoo.sha256_of(path) == entry["sha256"]
        assert entry["command"].startswith("python -m core zoo train --only " + entry["name"])
        total += path.stat().st_size
    assert total <= 30_000_000


@pytest.mark.parametrize("name", NAMES)
def test_every_zoo_model_reaches_its_manifest_accuracy_on_cpu(name):
    entry = zoo.zoo_entry(name)
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000
    accuracy = evaluate_network(cached_model(f"zoo/{name}", "cpu"), test, torch.device("cpu"), batch_size=100)
    assert accuracy >= 0.90
    assert abs(accuracy - entry["test_accuracy"]) <= 0.002, (accuracy, entry["test_accuracy"])


def test_zoo_train_rewrites_the_manifest(tmp_path):
    lines = []
    manifest = train_zoo(only=["vgg_small-s0"], device="cpu", epochs=1, train_limit=256, out_dir=tmp_path,
                         log=lines.append)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written == manifest and [m["name"] for m in written["models"]] == ["vgg_small-s0"]
    entry = written["models"][0]
    assert entry["train_images"] == 256 and entry["epochs"] == 1 and entry["device"].startswith("cpu")
    assert entry["sha256"] == zoo.sha256_of(tmp_path / entry["file"])
    assert any("epoch  1/1" in line for line in lines)
    with pytest.raises(ValueError, match="unknown zoo model"):
        train_zoo(only=["resnet_3333-s0"], out_dir=tmp_path)
