"""Retraining the zoo: ``python -m core zoo train [--only NAME] [--preset default|paper] [--device ...]``.

The manifest lists what the zoo holds; training rewrites each entry with what was measured.
``default`` is the bundled zoo (small networks on Fashion-MNIST, written to ``assets/zoo``);
``paper`` is the seed paper's scale (width 64, all 16 block configs {1,2}^4, CIFAR-10 when it
can be loaded, else Fashion-MNIST), written to ``$STITCHLAB_HOME/zoo-paper`` and loaded as
``paper/NAME``.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from core import paths
from core.data.datasets import load_dataset
from core.device import device_name, resolve_device
from core.models import zoo
from core.models.architectures import build_architecture
from core.models.checkpoints import save_checkpoint
from core.models.network import Network
from core.models.training import Recipe, accuracy, train_classifier

__all__ = ["default_specs", "paper_specs", "train_zoo", "zoo_dir_for"]

_FMNIST = "fashion-mnist"


def _resnet(blocks: str, seed: int, width: int = 16, in_channels: int = 1) -> dict:
    return {"name": f"resnet_{blocks}-s{seed}", "seed": seed, "architecture": f"ResNet-{blocks} (width {width})",
            "config": {"arch": "resnet", "blocks": [int(b) for b in blocks], "width": width,
                       "in_channels": in_channels, "num_classes": 10}}


def default_specs() -> list[dict]:
    """The bundled zoo: the paper's ResNets at width 16 (two seeds of the smallest and the
    largest, for seed-to-seed comparisons), a plain VGG-style CNN and a small MobileNetV2."""
    specs = [_resnet(b, 0) for b in ("1111", "1112", "1122", "1222", "2222")]
    specs += [_resnet("1111", 1), _resnet("2222", 1)]
    specs.append({"name": "vgg_small-s0", "seed": 0, "architecture": "VGG-style CNN (6 conv layers)",
                  "config": {"arch": "vgg", "stages": [[32, 32], [64, 64], [128, 128]], "in_channels": 1,
                             "num_classes": 10}})
    specs.append({"name": "mobilenet_v2-s0", "seed": 0, "architecture": "torchvision MobileNetV2 (x0.5, 32x32 stem)",
                  "config": {"arch": "torchvision", "name": "mobilenet_v2", "num_classes": 10, "in_channels": 1,
                             "small_input": True, "kwargs": {"width_mult": 0.5}}})
    return specs


def paper_specs(in_channels: int) -> list[dict]:
    """All 16 block configs of the seed paper at width 64, and a second seed of ResNet-18
    (blocks 2222) for seed-to-seed comparisons (and the CKA benchmark's two ResNet-18s)."""
    specs = [_resnet("".join(map(str, b)), 0, width=64, in_channels=in_channels)
             for b in itertools.product((1, 2), repeat=4)]
    return specs + [_resnet("2222", 1, width=64, in_channels=in_channels)]


def zoo_dir_for(preset: str) -> Path:
    if preset == "default":
        return paths.zoo_dir()
    if preset == "paper":
        return paths.home() / "zoo-paper"
    raise ValueError(f"unknown preset {preset!r}: default or paper")


def _paper_dataset() -> str:
    try:
        load_dataset("cifar10", "test", download=True)
        return "cifar10"
    except FileNotFoundError:
        return _FMNIST


def train_zoo(preset: str = "default", only: list[str] | None = None, device: str = "auto",
              epochs: int | None = None, train_limit: int | None = None, out_dir: Path | None = None,
              log=print, dataset: str | None = None) -> dict:
    """Train the zoo's models and rewrite the manifest; returns the manifest.

    ``epochs`` and ``train_limit`` override the recipe (for quick checks); ``out_dir``
    writes elsewhere than the preset's folder (tests use it); ``dataset`` skips the paper
    preset's CIFAR-10 probe (which tries a download).
    """
    dev = resolve_device(device)
    zoo_dir = Path(out_dir) if out_dir else zoo_dir_for(preset)
    manifest_file = zoo.manifest_path(zoo_dir)
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {"models": []}
    dataset = dataset or (_FMNIST if preset == "default" else _paper_dataset())
    in_channels = 1 if dataset == _FMNIST else 3
    known = {m["name"]: m for m in manifest["models"]}
    specs = {s["name"]: s for s in (default_specs() if preset == "default" else paper_specs(in_channels))}
    specs.update({name: {k: entry[k] for k in ("name", "seed", "architecture", "config") if k in entry}
                  for name, entry in known.items()})
    names = only or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown zoo model(s) {unknown}: choose from {', '.join(specs)}")

    train = load_dataset(dataset, "train", train_limit)
    test = load_dataset(dataset, "test")
    recipe = Recipe(epochs=epochs or Recipe.epochs)
    for n, name in enumerate(names, 1):
        spec = specs[name]
        log(f"[{n}/{len(names)}] {name}: {spec['architecture']} on {dataset}, {recipe.epochs} epochs, {dev}")
        # The exact command that reproduces this one model.
        command = " ".join(["python -m core zoo train", f"--only {shlex.quote(name)}", f"--preset {preset}",
                            f"--device {device}"] + ([f"--epochs {epochs}"] if epochs else [])
                           + ([f"--dataset {dataset}"] if preset == "paper" else [])
                           + ([f"--train-limit {train_limit}"] if train_limit else []))
        entry = _train_one(spec, train, test, recipe, dev, zoo_dir, dataset, command, log)
        known[name] = entry
        manifest["models"] = [known[s] for s in specs if s in known]
        manifest.update({"dataset": dataset, "preset": preset,
                         "note": "test_accuracy: fp32 on the CPU, full test split, weights as stored (fp16)"})
        tmp = manifest_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, manifest_file)  # the manifest is never half-written
        zoo._read_manifest_cached.cache_clear()
        log(f"    -> test accuracy {entry['test_accuracy']:.4f}, {entry['params']:,} parameters, "
            f"{entry['bytes'] / 1e6:.2f} MB")
    return manifest


def _train_one(spec, train, test, recipe, device, zoo_dir: Path, dataset: str, command: str, log) -> dict:
    info = train.info
    torch.manual_seed(spec["seed"])
    module = build_architecture(spec["config"])
    net = Network(spec["name"], module, info.image_shape, info.num_classes, info.mean, info.std,
                  spec["config"], dataset)
    start = time.perf_counter()
    history = train_classifier(net, train, test, recipe, device, spec["seed"], log)
    seconds = time.perf_counter() - start
    meta = {"config": spec["config"], "dataset": dataset, "input_shape": list(info.image_shape),
            "mean": list(info.mean), "std": list(info.std), "name": spec["name"]}
    file = zoo_dir / f"{spec['name']}.safetensors"
    save_checkpoint(module.cpu(), file, meta)
    # Score what was stored (fp16 weights), in fp32 on the CPU: the number a user reproduces.
    from core.models.checkpoints import apply_state_dict, read_checkpoint

    stored = build_architecture(spec["config"])
    apply_state_dict(stored, read_checkpoint(file)[0], file.name)
    stored.eval()
    test_acc = accuracy(Network(spec["name"], stored, info.image_shape, info.num_classes, info.mean, info.std,
                                spec["config"], dataset), test, torch.device("cpu"))
    from core.engine.layers import list_layers

    layers = [{"name": lay.name, "shape": list(lay.shape), "kind": lay.kind}
              for lay in list_layers(stored, info.image_shape)]
    return {
        "name": spec["name"], "architecture": spec["architecture"], "config": spec["config"], "layers": layers,
        "dataset": dataset, "input_shape": list(info.image_shape), "mean": list(info.mean), "std": list(info.std),
        "seed": spec["seed"], "epochs": recipe.epochs, "recipe": recipe.to_dict(),
        "train_images": len(train), "test_accuracy": round(test_acc, 4), "history": history,
        "params": sum(p.numel() for p in stored.parameters()), "file": file.name, "bytes": file.stat().st_size,
        "sha256": zoo.sha256_of(file), "dtype": "float16", "command": command,
        "device": device_name(device),
        "train_seconds": round(seconds, 1), "torch": torch.__version__,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
