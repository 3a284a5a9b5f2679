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
by its weights without loading the network. :func:`core.models.network.load_model` builds it,
after :func:`check_budget` (which imports torchvision for a ``torchvision/`` name only).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.errors import ZooError
from core.models import zoo

__all__ = ["SOURCES", "ModelName", "parse", "fingerprint", "label", "check", "random_name", "parameter_count",
           "max_model_params", "check_budget", "MAX_MODEL_PARAMS_ENV", "DEFAULT_MAX_MODEL_PARAMS"]

SOURCES = ("zoo/", "paper/", "torchvision/", "file:")
_ARCH = re.compile(r"^[a-z][a-z0-9_]*$")  # torchvision's architecture names
_MAX_SEED = 2**63 - 1  # torch.manual_seed's range; beyond it torch fails with "Overflow when unpacking long"
MAX_MODEL_PARAMS_ENV = "STITCHLAB_MAX_MODEL_PARAMS"
# Admits every torchvision classifier (the largest, regnet_y_128gf, has 645 M parameters: 2.6 GB
# in float32) and far more than the zoo; an operator sharing one machine sets a lower budget.
DEFAULT_MAX_MODEL_PARAMS = 700_000_000


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
        elif re.fullmatch(r"random:-?[0-9]+", suffix):  # ASCII digits: str.isdigit() also takes '²' and '١'
            digits = suffix[len("random:"):]
            seed = int(digits) if len(digits) <= 20 else _MAX_SEED + 1  # (int() refuses 4,300 digits and more)
            if abs(seed) > _MAX_SEED:
                raise ValueError(f"the seed of {name[:80]!r} is too large: '@random:SEED' takes a SEED below 2**63, "
                                 f"such as '@random:1'")
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


def max_model_params() -> int:
    """The largest model this machine loads, in parameters: ``$STITCHLAB_MAX_MODEL_PARAMS``, else
    :data:`DEFAULT_MAX_MODEL_PARAMS`. A bad value is an error, never a silent default."""
    raw = os.environ.get(MAX_MODEL_PARAMS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_MODEL_PARAMS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):  # also NaN
        raise ValueError(f"{MAX_MODEL_PARAMS_ENV}={raw[:40]!r} is not a number of parameters: set it to a whole "
                         f"number such as 700000000 (the default), or unset it")
    return int(value)


def parameter_count(name: str) -> int | None:
    """How many parameters the model ``name`` has, counted without building it: the manifest's
    count for zoo/ and paper/ models, torchvision's weights metadata (or a build on the meta
    device, which allocates nothing) for torchvision/ ones. None when no record says (a file:
    checkpoint, whose tensors are checked against its architecture when it is read)."""
    model = parse(name)
    if model.source in ("zoo/", "paper/"):
        entry = zoo.zoo_entry(model.key, None if model.source == "zoo/" else _paper_dir())
        return entry.get("params")
    if model.source == "torchvision/" and _ARCH.match(model.key):
        return _torchvision_params(model.key)
    return None


@functools.lru_cache(maxsize=128)
def _torchvision_params(arch: str) -> int | None:
    import torchvision  # here, not at the top: the dashboard imports this module and never torch

    if arch not in torchvision.models.list_models(module=torchvision.models):
        return None  # building it says which names exist
    try:
        return int(torchvision.models.get_model_weights(arch).DEFAULT.meta["num_params"])
    except (ValueError, KeyError, AttributeError):  # an architecture without published weights
        import torch

        try:
            with torch.device("meta"):
                module = torchvision.models.get_model(arch, weights=None)
        except Exception:  # some architectures copy tensors while they initialise, which meta tensors cannot
            return None
        return sum(p.numel() for p in module.parameters())


def check_budget(name: str) -> None:
    """Refuse, in one line and before anything is built, a model over :func:`max_model_params`."""
    count, limit = parameter_count(name), max_model_params()
    if count is not None and count > limit:
        size = f"{count * 4 / 1e9:.1f} GB" if count * 4 >= 1e9 else f"{count * 4 / 1e6:,.0f} MB"
        raise ValueError(f"{name} has {count / 1e6:,.1f} M parameters ({size} in float32), over "
                         f"this machine's budget of {limit / 1e6:,.1f} M per model: pick a smaller model, or raise "
                         f"the budget with {MAX_MODEL_PARAMS_ENV}={count}")
