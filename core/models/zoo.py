"""The bundled model zoo: ``assets/zoo/manifest.json`` and the safetensors files beside it.

Each manifest entry records how a model was made (architecture config, dataset, seed,
epochs, device, the exact command) and what it scored (test accuracy on the full test
split), plus the sha256 of its weights file, which is checked on every load.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from core import paths
from core.errors import ZooError

__all__ = ["manifest_path", "read_manifest", "zoo_entry", "zoo_names", "sha256_of", "ZooError"]


def manifest_path(zoo_dir: Path | None = None) -> Path:
    return (zoo_dir or paths.zoo_dir()) / "manifest.json"


def read_manifest(zoo_dir: Path | None = None) -> dict:
    """The manifest as a dict ``{"models": [...], ...}``; an empty zoo if there is none yet."""
    path = manifest_path(zoo_dir)
    # keyed on the file's modification time: `zoo train` in another process rewrites it
    return _read_manifest_cached(str(path), path.stat().st_mtime_ns if path.exists() else None)


@functools.lru_cache(maxsize=4)
def _read_manifest_cached(path: str, mtime_ns: int | None) -> dict:
    p = Path(path)
    if not p.exists():
        return {"models": []}
    return json.loads(p.read_text())


def zoo_names(zoo_dir: Path | None = None) -> list[str]:
    return [m["name"] for m in read_manifest(zoo_dir)["models"]]


def zoo_entry(name: str, zoo_dir: Path | None = None) -> dict:
    """The manifest entry of zoo model ``name`` (without the ``zoo/`` prefix)."""
    for entry in read_manifest(zoo_dir)["models"]:
        if entry["name"] == name:
            return entry
    names = zoo_names(zoo_dir)
    raise ZooError(f"unknown zoo model {name!r}: the zoo has {', '.join(names) or 'no models yet'} "
                   f"(python -m core models lists them)")


def weights_path(entry: dict, zoo_dir: Path | None = None) -> Path:
    return (zoo_dir or paths.zoo_dir()) / entry["file"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_weights(entry: dict, zoo_dir: Path | None = None) -> Path:
    """The weights file of ``entry``, after checking it exists and matches the manifest's sha256."""
    path = weights_path(entry, zoo_dir)
    if not path.exists():
        shown = path.relative_to(paths.PROJECT_ROOT) if path.is_relative_to(paths.PROJECT_ROOT) else path
        raise ZooError(f"zoo model {entry['name']!r}: weights file {path} is missing; restore it from git "
                       f"(git checkout -- {shown}) or retrain it with: python -m core zoo train --only {entry['name']}")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ZooError(f"zoo model {entry['name']!r}: {path.name} was altered (sha256 {actual[:12]}... but the "
                       f"manifest says {entry['sha256'][:12]}...); restore it from git or retrain it with: "
                       f"python -m core zoo train --only {entry['name']}")
    return path
