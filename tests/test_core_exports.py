"""``core``'s public names: imported on first use, so ``import core`` stays free of torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import core


@pytest.mark.parametrize("name, module", [("MEASURES", "core.similarity.measures"),
                                          ("model_similarity", "core.similarity.networks"),
                                          ("SimilarityResult", "core.similarity.networks")])
def test_the_similarity_indices_are_public_names(name, module):
    assert name in core.__all__
    assert getattr(core, name) is getattr(importlib.import_module(module), name)


def test_every_public_name_is_there():
    missing = [name for name in core.__all__ if not hasattr(core, name)]
    assert not missing


def test_importing_core_does_not_import_torch():
    code = "import sys, core; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
