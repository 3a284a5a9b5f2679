"""The Lesson page's material: real grids and a CKA matrix on the zoo, computed by one command.

``python -m core lesson build --device cuda`` runs them with the seed paper's recipe on every
training and test image and writes ``assets/lesson/lesson.json`` (grids as
``GridResult.to_json()``, CKA as ``CkaResult.to_json()``), so the lesson opens instantly on any
machine; a student can rerun any of them from the Stitching page.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from core import paths
from core.runs.recipes import RECIPES

__all__ = ["LESSON_FILE", "LESSON_GRIDS", "build_lesson", "read_lesson"]

LESSON_FILE = paths.ASSETS / "lesson" / "lesson.json"
_PAPER = RECIPES["paper"].settings
_PAIR = {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_2222-s0"}
LESSON_GRIDS = {
    "seeds": {"sender": "zoo/resnet_1111-s0", "receiver": "zoo/resnet_1111-s1", **_PAPER},
    "deeper": {**_PAIR, **_PAPER},
    "deeper_random_sender": {**_PAIR, **_PAPER, "control": "random-sender"},
    "deeper_random_receiver": {**_PAIR, **_PAPER, "control": "random-receiver"},
    "deeper_random_both": {**_PAIR, **_PAPER, "control": "random-both"},
    "deeper_lstsq": {**_PAIR, "mode": "lstsq"},
}


def build_lesson(device: str = "auto", out: Path | None = None, train_limit: int | None = None,
                 eval_limit: int | None = None, log=print) -> Path:
    """Compute the lesson's grids and CKA matrix and write them to ``out`` (default: the bundled file)."""
    import torch

    from core.device import device_name, resolve_device
    from core.engine.grid import run_grid
    from core.similarity.networks import model_cka

    out = Path(out or LESSON_FILE)
    material = {"grids": {}, "cka": None}
    start = time.perf_counter()
    for key, config in LESSON_GRIDS.items():
        control = config.get("control", "none")
        log(f"grid {key}: {config['sender']} -> {config['receiver']} ({config['mode']}, {control})")
        result = run_grid({**config, "train_limit": train_limit, "eval_limit": eval_limit}, device=device)
        material["grids"][key] = result.to_json()
    log("CKA zoo/resnet_1111-s0 vs zoo/resnet_2222-s0")
    material["cka"] = model_cka(_PAIR["sender"], _PAIR["receiver"], limit=eval_limit, device=device).to_json()
    material["made_with"] = {
        "command": f"python -m core lesson build --device {device}",
        "device": device_name(resolve_device(device)),
        "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_limit": train_limit, "eval_limit": eval_limit}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(material, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def read_lesson(path: Path | None = None) -> dict | None:
    """The lesson material, or None if it has not been built."""
    path = Path(path or LESSON_FILE)
    return json.loads(path.read_text()) if path.exists() else None
