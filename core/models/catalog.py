"""What the dashboard lists, without importing torch when it can: model names, their
descriptions and their layers (read from the zoo manifest, which records each model's layers).
"""

from __future__ import annotations

import functools

from core import paths
from core.models import sources, zoo

__all__ = ["model_names", "model_label", "layers_of", "trained_on", "zoo_table", "DEFAULT_SENDER",
           "DEFAULT_RECEIVER"]

DEFAULT_SENDER = "zoo/resnet_1111-s0"
DEFAULT_RECEIVER = "zoo/resnet_2222-s0"


def model_names() -> list[str]:
    """Zoo models, then uploaded ones."""
    from core.models.uploads import list_uploads

    return [f"zoo/{n}" for n in zoo.zoo_names()] + list_uploads()


model_label = sources.label


def layers_of(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``((layer name, shape), ...)`` of a model's default layers."""
    return _layers_of(name, sources.fingerprint(name))  # the weights' fingerprint: an upload saved again is re-read


@functools.lru_cache(maxsize=64)
def _layers_of(name: str, fingerprint: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = sources.parse(name)
    entry = {}
    if model.source in ("zoo/", "paper/"):  # a random copy has its trained model's layers
        entry = zoo.zoo_entry(model.key, None if model.source == "zoo/" else paths.home() / "zoo-paper")
    elif model.source == "file:":
        entry = _safetensors_metadata(model.key)
    if "layers" in entry:
        return tuple((layer["name"], tuple(layer["shape"])) for layer in entry["layers"])
    from core.engine.layers import list_layers
    from core.models.network import cached_model

    return tuple((layer.name, layer.shape) for layer in list_layers(cached_model(name, "cpu")))


def trained_on(name: str) -> str | None:
    """The dataset a model was trained on, from its manifest or upload metadata (no torch);
    None when no record says (a torchvision model, a missing paper/ model)."""
    try:
        model = sources.parse(name)
        if model.source in ("zoo/", "paper/"):
            zoo_dir = None if model.source == "zoo/" else paths.home() / "zoo-paper"
            return zoo.zoo_entry(model.key, zoo_dir).get("dataset")
    except ValueError:  # a malformed or unknown name: whoever loads it says what is wrong
        return None
    return _safetensors_metadata(model.key).get("dataset") if model.source == "file:" else None


def _safetensors_metadata(path: str) -> dict:
    """StitchLab's metadata of a safetensors file, read from its header (no torch): an 8-byte
    little-endian length, then JSON whose ``__metadata__`` holds ours as a JSON string."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(size, 10_000_000)))
        return json.loads(header.get("__metadata__", {}).get("stitchlab", "{}"))
    except (OSError, ValueError, struct.error):
        return {}  # not ours, or unreadable: the caller loads the model, which says what is wrong


def zoo_table() -> list[dict]:
    """One row per zoo model: name, architecture, parameters, accuracy, dataset, size, seed."""
    return [{"name": f"zoo/{e['name']}", "architecture": e.get("architecture", e["config"]["arch"]),
             "parameters": e.get("params"), "test accuracy": e.get("test_accuracy"), "dataset": e.get("dataset"),
             "MB": round(e.get("bytes", 0) / 1e6, 2), "seed": e.get("seed"), "trained on": e.get("device")}
            for e in zoo.read_manifest()["models"]]
