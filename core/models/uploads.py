"""Checkpoints users upload: validated, then kept as StitchLab safetensors files.

An upload is read as data only (safetensors, or ``torch.load(weights_only=True)``), loaded
strictly into the architecture it claims (its own metadata, or the one the user picked),
run once on a blank image to prove it works, and only then saved, with its architecture in
the metadata, under ``$STITCHLAB_HOME/uploads``, where the registry finds it as ``file:PATH``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from core import paths

__all__ = ["save_upload", "list_uploads", "uploads_dir"]


def uploads_dir() -> Path:
    path = paths.home() / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_uploads() -> list[str]:
    """Registry names of the uploaded models, newest first."""
    files = sorted(uploads_dir().glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [f"file:{p}" for p in files]


def save_upload(data: bytes, filename: str, name: str, config: dict | None = None,
                like: str | None = None) -> str:
    """Validate an uploaded checkpoint and keep it; returns its registry name (``file:...``).

    ``config`` is the architecture for a plain state dict; ``like`` names a zoo model whose
    architecture, input and normalisation the checkpoint shares (what the dashboard offers).
    Raises :class:`core.models.checkpoints.CheckpointError` with the reason and the fix.
    """
    import torch  # here, not above: listing uploads (the sidebar) must not pay for torch

    from core.models.architectures import build_architecture
    from core.models.checkpoints import (
        CheckpointError,
        apply_state_dict,
        max_upload_bytes,
        read_checkpoint,
        save_checkpoint,
    )
    from core.models.zoo import zoo_entry

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")
    if not safe:
        raise CheckpointError(f"give the model a name of letters, digits, '-' or '_' (got {name!r})")
    if len(data) > max_upload_bytes():
        raise CheckpointError(f"{filename} is {len(data) / 2**20:.1f} MB, over the "
                              f"{max_upload_bytes() / 2**20:.0f} MB upload limit (STITCHLAB_MAX_CHECKPOINT_MB)")
    with tempfile.TemporaryDirectory(dir=paths.home()) as tmp:
        raw = Path(tmp) / Path(filename).name
        raw.write_bytes(data)
        state, meta = read_checkpoint(raw)
    meta = dict(meta or {})
    if like:
        entry = zoo_entry(like.removeprefix("zoo/"))
        meta.update({k: entry[k] for k in ("config", "dataset", "input_shape", "mean", "std")})
    if config:
        meta["config"] = config
    if "config" not in meta:
        raise CheckpointError(f"{filename} does not say which architecture it is: pick the zoo model whose "
                              f"architecture it was trained with")
    module = build_architecture(meta["config"])
    apply_state_dict(module, state, filename)
    module.eval()
    shape = tuple(meta.get("input_shape", (meta["config"].get("in_channels", 1), 32, 32)))
    try:
        with torch.no_grad():
            logits = module(torch.zeros(1, *shape))
    except Exception as exc:
        raise CheckpointError(f"{filename} loads but does not run on {shape} inputs ({exc})") from None
    meta.setdefault("dataset", "fashion-mnist")
    meta.setdefault("input_shape", list(shape))
    meta["num_classes"] = int(logits.shape[-1])
    meta["uploaded_as"] = Path(filename).name
    from core.engine.layers import list_layers

    # Its layers, as the zoo's manifest records them: the dashboard lists them without loading it.
    meta["layers"] = [{"name": lay.name, "shape": list(lay.shape), "kind": lay.kind}
                      for lay in list_layers(module, shape)]
    target = uploads_dir() / f"{safe}.safetensors"
    save_checkpoint(module, target, meta, dtype=torch.float32)
    return f"file:{target}"
