"""Where StitchLab keeps what it downloads, trains and stores.

Everything lives under one folder, ``$STITCHLAB_HOME`` (default ``~/.cache/stitchlab``), so a
test or a classroom deployment can point the whole app elsewhere with one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS = PROJECT_ROOT / "assets"
BUNDLED_ZOO = ASSETS / "zoo"
# Where Debian's dataset-fashion-mnist package (make setup) puts the dataset's gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def zoo_dir() -> Path:
    """The zoo that ``zoo/NAME`` loads from: the bundled one, or ``$STITCHLAB_ZOO`` (tests, forks)."""
    return Path(os.environ.get("STITCHLAB_ZOO", BUNDLED_ZOO)).expanduser()


def home() -> Path:
    """The folder for caches, datasets, uploads and the results database."""
    path = Path(os.environ.get("STITCHLAB_HOME", Path.home() / ".cache" / "stitchlab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    path = home() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db() -> Path:
    """The SQLite results store used when none is named (``STITCHLAB_DB`` overrides it)."""
    return Path(os.environ.get("STITCHLAB_DB", home() / "stitchlab.sqlite3")).expanduser()
