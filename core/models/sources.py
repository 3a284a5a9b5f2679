"""Where a model comes from, told by its name: the one place that reads model names.

A model name is ``SOURCE`` + ``KEY`` + an optional ``@random`` / ``@random:SEED`` suffix:

==================  ==========================================  ====================================
source              key                                          weights' fingerprint
==================  ==========================================  ====================================
``zoo/``            a bundled model (``assets/zoo/manifest``)    its sha256 in the manifest
``paper/``          a model of ``zoo train --preset paper``       its sha256 in that manifest
``torchvision/``    a torchvision classifier (ImageNet weights)  the name (torchvision pins them)
``file:``           a checkpoint path (an upload)                the file's sha256
==================  ==========================================  ====================================

Everything here is torch-free: the dashboard checks a name, labels it and keys stored results
by its weights without loading the network. :func:`core.models.network.load_model` builds it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.errors import ZooError
from core.models import zoo

__all__ = ["SOURCES", "ModelName", "parse", "fingerprint", "label", "check", "random_name"]

SOURCES = ("zoo/", "paper/", "torchvision/", "file:")
_ARCH = re.compile(r"^[a-z][a-z0-9_]*$")  # torchvision's architecture names


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``zoo/resnet_1111-s0@random:3`` -> source ``zoo/``, key
    ``resnet_1111-s0``, seed 3 (``seed`` None: the trained weights)."""

    source: str
    key: str
    seed: int | None = None

    @property
    def base(self) -> str:
        """The trained model's name, without the random suffix."""
        return self.source + self.key

    def __str__(self) -> str:
        return self.base if self.seed is None else f"{self.base}@random:{self.seed}"


def parse(name: str) -> ModelName:
    """Split a model name; a malformed one raises ``ValueError`` saying what names look like."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name is a string such as 'zoo/resnet_1111-s0', got {name!r}")
    base, seed = name, None
    if "@" in name:
        base, suffix = name.rsplit("@", 1)
        if suffix == "random":
            seed = 0
        elif suffix.startswith("random:") and suffix[len("random:"):].lstrip("-").isdigit():
            seed = int(suffix[len("random:"):])
        else:
            raise ValueError(f"unknown model suffix '@{suffix}' in {name!r}: use '@random' or '@random:SEED'")
    source = next((s for s in SOURCES if base.startswith(s)), None)
    if source is None or len(base) == len(source):
        raise ValueError(f"unknown model {name!r}: names start with 'zoo/', 'paper/', 'torchvision/' or 'file:' "
                         f"(python -m core models lists the zoo)")
    return ModelName(source, base[len(source):], seed)


def random_name(name: str, seed: int) -> str:
    """The name of ``name``'s architecture with random weights from ``seed`` (a control)."""
    return str(ModelName(parse(name).source, parse(name).key, seed))


def _paper_dir() -> Path:
    return paths.home() / "zoo-paper"


def fingerprint(name: str) -> str:
    """What identifies the weights a name loads: part of every stored result's identity, so an
    upload saved again under its old name is a new identity, never a stale hit."""
    model = parse(name)
    if model.source == "zoo/":
        return zoo.zoo_entry(model.key)["sha256"]
    if model.source == "paper/":
        return zoo.zoo_entry(model.key, _paper_dir())["sha256"]
    if model.source == "file:":
        path = Path(model.key).expanduser()
        stat = path.stat()
        return _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)
    return model.base


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """A checkpoint's sha256, hashed again only when the file changes (pages ask on every rerun)."""
    return zoo.sha256_of(Path(path))


def label(name: str) -> str:
    """A short human label: ``zoo/resnet_1111-s0 · ResNet-1111 (width 16) · 93.5 %``."""
    try:
        model = parse(name)
    except ValueError:
        return name
    if model.source == "zoo/" and model.seed is None:
        try:
            entry = zoo.zoo_entry(model.key)
        except ZooError:
            return name
        return f"{name} · {entry['architecture']} · {entry['test_accuracy'] * 100:.1f} %"
    if model.source == "file:":
        return f"uploaded: {model.key.rsplit('/', 1)[-1].removesuffix('.safetensors')}" + (
            f" @random:{model.seed}" if model.seed is not None else "")
    return name


def check(name: str, allowed_files: list[str] | None = None) -> ModelName:
    """That ``name`` names a model this machine has, without loading it; raises ``ValueError``
    naming the problem. ``allowed_files``: the ``file:`` names a caller accepts (the dashboard
    accepts only its uploads, never another path on the server)."""
    model = parse(name)
    if model.source == "zoo/":
        zoo.zoo_entry(model.key)
    elif model.source == "paper/":
        zoo.zoo_entry(model.key, _paper_dir())
    elif model.source == "torchvision/":
        if not _ARCH.match(model.key):
            raise ValueError(f"{name!r} is not a torchvision architecture name (such as torchvision/resnet18)")
    elif allowed_files is not None and model.base not in allowed_files:
        raise ValueError(f"{model.base!r} is not an uploaded checkpoint here; add it on the Models page")
    elif not Path(model.key).expanduser().is_file():
        raise ValueError(f"no checkpoint file at {model.key!r}")
    return model
