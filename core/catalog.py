"""What the dashboard lists, without importing torch when it can: model names, their
descriptions and their layers (read from the zoo manifest, which records each model's layers).
"""

from __future__ import annotations

import functools

from . import zoo

__all__ = ["model_names", "model_label", "layers_of", "zoo_table", "DEFAULT_SENDER", "DEFAULT_RECEIVER"]

DEFAULT_SENDER = "zoo/resnet_1111-s0"
DEFAULT_RECEIVER = "zoo/resnet_2222-s0"


def model_names() -> list[str]:
    """Zoo models, then uploaded ones."""
    from .uploads import list_uploads

    return [f"zoo/{n}" for n in zoo.zoo_names()] + list_uploads()


def model_label(name: str) -> str:
    """A short human label: ``zoo/resnet_1111-s0 · ResNet-1111 (width 16) · 93.5 %``."""
    if name.startswith("zoo/"):
        try:
            entry = zoo.zoo_entry(name[4:])
        except zoo.ZooError:
            return name
        return f"{name} · {entry['architecture']} · {entry['test_accuracy'] * 100:.1f} %"
    if name.startswith("file:"):
        return f"uploaded: {name.rsplit('/', 1)[-1].removesuffix('.safetensors')}"
    return name


def layers_of(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``((layer name, shape), ...)`` of a model's default layers."""
    from .results import _fingerprint

    return _layers_of(name, _fingerprint(name))  # the weights' fingerprint: an upload saved again is re-read


@functools.lru_cache(maxsize=64)
def _layers_of(name: str, fingerprint: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if name.startswith("zoo/") and "@" not in name:
        entry = zoo.zoo_entry(name[4:])
        if "layers" in entry:
            return tuple((layer["name"], tuple(layer["shape"])) for layer in entry["layers"])
    from .grid import cached_model
    from .layers import list_layers

    return tuple((layer.name, layer.shape) for layer in list_layers(cached_model(name, "cpu")))


def zoo_table() -> list[dict]:
    """One row per zoo model: name, architecture, parameters, accuracy, dataset, size, seed."""
    return [{"name": f"zoo/{e['name']}", "architecture": e.get("architecture", e["config"]["arch"]),
             "parameters": e.get("params"), "test accuracy": e.get("test_accuracy"), "dataset": e.get("dataset"),
             "MB": round(e.get("bytes", 0) / 1e6, 2), "seed": e.get("seed"), "trained on": e.get("device")}
            for e in zoo.read_manifest()["models"]]
